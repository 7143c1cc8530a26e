#!/usr/bin/env bash
# Build the wheel, install it into a fresh virtual environment, and run from outside the source tree what a user
# would: the quickstart with the library alone (torch and numpy), then `hardbatch --help` and a tiny run with the
# cli extra. Usage: bash scripts/check_wheel.sh [PYTHON]   (.ci/run calls it; about 2-3 minutes, most of it torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m build --wheel --outdir "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/hardbatch-*.whl)"
# (the listing goes to a file first: with pipefail, grep -q leaving early would fail unzip with SIGPIPE)
unzip -l "$wheel" > "$work/contents.txt"
grep -q "hardbatch/py.typed" "$work/contents.txt" || { echo "check_wheel: py.typed is not in $wheel"; exit 1; }
python3 -m venv "$work/venv"
pip="$work/venv/bin/python -m pip install --quiet --disable-pip-version-check -c $PWD/constraints.txt"
$pip "$wheel" 2> "$work/pip.log" || { cat "$work/pip.log"; exit 1; }
cp examples/quickstart.py "$work/quickstart.py"
(cd "$work" && OMP_NUM_THREADS=1 venv/bin/python quickstart.py)
imported="$(cd "$work" && venv/bin/python -c "import sys, hardbatch; assert 'sklearn' not in sys.modules; print(hardbatch.__file__)")"
case "$imported" in
    "$work/venv/"*) ;;
    *) echo "check_wheel: hardbatch was imported from $imported, not from the wheel"; exit 1 ;;
esac
$pip "$wheel[cli]" 2> "$work/pip.log" || { cat "$work/pip.log"; exit 1; }
(cd "$work" && venv/bin/hardbatch --help > /dev/null)
(cd "$work" && OMP_NUM_THREADS=1 venv/bin/hardbatch train --dataset digits --model mlp --epochs 1 --out run \
    --no-progress)
echo "check_wheel: $(basename "$wheel") builds, installs and runs"
