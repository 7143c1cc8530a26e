# Two commands for a fresh machine: `make demo` and `make test`. Each sets up .venv first if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hardbatch-installed
DOCS_STAMP := $(VENV)/.hardbatch-docs-installed
DEV_STAMP := $(VENV)/.hardbatch-dev-installed
LINT_PATHS := src tests scripts benchmarks examples
DEMO_OUT ?= runs/demo

.PHONY: setup demo test bench evidence docs lint types wheel ci clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install hardbatch with torch/torchvision pinned by constraints.txt

demo: $(STAMP)  ## the rule at δ 0.5 and 1, random δ 0.5 and uniform × 5 seeds on MNIST-1D (generated offline), about 2 min
	$(BIN)/hardbatch compare --dataset mnist1d --model cnn1d --policies hardbatch random uniform --deltas 0.5 1.0 \
		--seeds 0 1 2 3 4 --epochs 10 --batch-size 100 --lr 0.3 --schedule cosine --out $(DEMO_OUT)

test: $(STAMP)  ## the test suite (CPU, two workers, a test file each at a time, files with slow tests first; a few minutes)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

bench: $(STAMP)  ## training-overhead and per-policy cost benchmarks (see benchmarks/README.md)
	$(BIN)/python benchmarks/bench_quickstart.py
	$(BIN)/python benchmarks/bench_overhead.py
	$(BIN)/python benchmarks/bench_policies.py
	$(BIN)/python benchmarks/bench_runs.py

evidence: $(STAMP)  ## docs/evidence.md: every policy on MNIST-1D and Fashion-MNIST, clean, noisy and long-tailed, with uniform's compute frontier (4,297 runs, about 390 CPU minutes: 3 to 4 h on 2 cores; resumable)
	mkdir -p runs/evidence
	$(BIN)/python scripts/evidence.py --shard 0/2 > runs/evidence/shard-0.log 2>&1 & \
	$(BIN)/python scripts/evidence.py --shard 1/2 --readme README.md 2>&1 | tee runs/evidence/shard-1.log; wait

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  ## the docs site into site/, offline, warnings as errors (broken links, missing references); the CLI page checked fresh
	$(BIN)/python scripts/docs_cli.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

$(DEV_STAMP): $(STAMP) constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(DEV_STAMP)

lint: $(DEV_STAMP)  ## ruff check and ruff format --check (settings in pyproject.toml, ruff pinned in constraints.txt)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

types: $(DEV_STAMP)  ## mypy on src/hardbatch, every def annotated (settings in pyproject.toml)
	$(BIN)/mypy

wheel: $(DEV_STAMP)  ## build the wheel, install it into a fresh venv, run the quickstart, hardbatch --help and a tiny run there (2-3 min)
	bash scripts/check_wheel.sh $(BIN)/python

ci: lint types test docs wheel  ## everything .ci/run checks, in its order

clean:
	rm -rf $(VENV) runs build site *.egg-info src/*.egg-info
