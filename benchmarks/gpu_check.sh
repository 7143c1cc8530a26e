#!/usr/bin/env bash
# One prepared GPU check, under 10 minutes (3-5 expected; its parts are capped at 300, 180 and 90 s):
# versions, ResNet-18 throughput through hardbatch (benchmarks/bench_gpu.py), a short digits
# comparison of every policy on the GPU with its report (cost columns included), then one --compile run.
#
#   bash benchmarks/gpu_check.sh            # from the repository root; OUT defaults to ./gpu_out
#
# Needs only the machine's own python3 with torch + torchvision (and scikit-learn, scipy,
# matplotlib, tqdm for the digits comparison): the package is used from src/ via PYTHONPATH, so
# nothing is installed and no network is needed. Everything printed also goes to $OUT/gpu_check.log.
# $OUT receives at most 6 files (the device tool returns 8 at most): the log, bench_gpu.json, the
# digits report.md / summary.csv / runs.csv, and a tarball of the digits run directories.
#
# Dry run of the script's logic on a machine without a GPU:  DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
RUNS_PARENT="$(mktemp -d "${TMPDIR:-/tmp}/hardbatch_gpu_check.XXXXXX")"  # many small files: kept out of $OUT
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

main() {
    local start=$SECONDS status=0
    section() { echo; echo "=== $* [$((SECONDS - start)) s] ==="; }

    section "machine and versions"
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
    nvidia-smi || echo "nvidia-smi not available"
    "$PY" - <<'EOF'
import platform, torch, torchvision, hardbatch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}), torchvision {torchvision.__version__}, hardbatch {hardbatch.__version__}")
print(f"cuda available: {torch.cuda.is_available()}" +
      (f", {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}" if torch.cuda.is_available() else ""))
EOF

    section "ResNet-18 throughput: δ=1 vs δ=0.5, data on the GPU vs host data (pin_memory + workers)"
    local bench_args=(--device "$DEVICE" --json "$OUT/bench_gpu.json")
    [[ "$QUICK" == 1 ]] && bench_args+=(--quick)
    timeout 300 "$PY" benchmarks/bench_gpu.py "${bench_args[@]}"
    local rc=$?; echo "bench_gpu.py exit status $rc"; ((rc)) && status=1

    section "hardbatch compare of every policy on digits, device $DEVICE"
    local runs="$RUNS_PARENT/digits_gpu"
    local compare_args=(--epochs 5 --seeds 0 1 --deltas 0.5 1.0
                        --policies uniform hardbatch random cyclic selective-backprop infobatch)
    [[ "$QUICK" == 1 ]] && compare_args=(--epochs 2 --seeds 0 --deltas 0.5 1.0 --policies hardbatch selective-backprop infobatch)
    timeout 180 "$PY" -m hardbatch compare --dataset digits "${compare_args[@]}" --device "$DEVICE" \
        --out "$runs" --no-progress
    rc=$?; echo "compare exit status $rc"; ((rc)) && status=1
    for f in report.md summary.csv runs.csv; do
        [[ -f "$runs/$f" ]] && cp "$runs/$f" "$OUT/digits_gpu_$f"
    done
    [[ -d "$runs" ]] && tar -czf "$OUT/digits_gpu_runs.tar.gz" -C "$RUNS_PARENT" digits_gpu

    section "torch.compile: one digits run with --compile (epoch 1's train_seconds include compiling, epoch 2's do not)"
    # QUICK (the CPU dry run) traces with aot_eager: inductor's C++ code generation takes minutes on a small CPU.
    local backend=inductor; [[ "$QUICK" == 1 ]] && backend=aot_eager
    timeout 90 "$PY" -m hardbatch train --dataset digits --model small_cnn --epochs 2 --delta 0.5 \
        --compile "$backend" --device "$DEVICE" --out "$RUNS_PARENT/compiled" --no-progress
    rc=$?; echo "compile ($backend) exit status $rc"; ((rc)) && status=1
    [[ -f "$RUNS_PARENT/compiled/history.csv" ]] && cat "$RUNS_PARENT/compiled/history.csv"

    section "done, status $status; files in $OUT"
    ls -l "$OUT"
    return $status
}

main 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
rm -rf "$RUNS_PARENT"
exit "$status"
