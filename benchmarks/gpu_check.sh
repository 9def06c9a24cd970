#!/usr/bin/env bash
# The GPU check, in one go, on a machine with an NVIDIA GPU (no internet needed; it must have
# cupy, numpy, scipy, hypothesis, pytest and torch). From the repository root:
#
#     bash benchmarks/gpu_check.sh
#
# 1. the device and the libraries;
# 2. the fused-kernel tests (tests/test_kernels.py), which skip without a GPU, so here they must
#    pass — a skip counts as a failure of this check;
# 3. the whole test suite (without the @slow cases) on both backends: MINIVLM_TEST_BACKENDS=
#    numpy,cupy and MINIVLM_BACKEND=cupy, so new tensors are made on the GPU by default;
# 4. the GPU benchmark (benchmarks/gpu_bench.py): ViT-B/16 and CLIP ViT-B/32 training steps,
#    minivlm on CuPy against torch CUDA eager, float32 with TF32 off in both.
#
# Everything is logged to $OUT (or benchmarks/results/ without $OUT): gpu_check.log, the pytest
# logs, gpu.md and gpu.json. Each step has a time limit (seconds; override by environment):
# SUITE_TIMEOUT (default 300) and BENCH_TIMEOUT (default 180). The exit status is 0 only if every
# step passed.
set -u -o pipefail

OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
export CUPY_TF32=0
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
status=0

say() { echo "== $* ($(date +%T))" | tee -a "$LOG"; }

run_step() {  # run_step NAME TIMEOUT COMMAND...: log it, time-limit it, remember a failure
    local name=$1 limit=$2
    shift 2
    say "$name: $*"
    timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local code=${PIPESTATUS[0]}
    if [ "$code" -ne 0 ]; then
        say "$name FAILED (exit $code$([ "$code" -eq 124 ] && echo ", over its $limit s limit"))"
        status=1
    else
        say "$name passed"
    fi
}

say "device and libraries"
nvidia-smi 2>&1 | tee -a "$LOG"
python - <<'EOF' 2>&1 | tee -a "$LOG"
import cupy, numpy, scipy, torch
print("cupy", cupy.__version__, "| numpy", numpy.__version__, "| scipy", scipy.__version__,
      "| torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
print("GPU:", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
      "| devices:", cupy.cuda.runtime.getDeviceCount())
EOF

run_step "fused kernels" 90 \
    env MINIVLM_TEST_BACKENDS=numpy,cupy MINIVLM_BACKEND=cupy \
    python -m pytest tests/test_kernels.py -q -rs -p no:cacheprovider \
    --junitxml="$OUT_DIR/pytest_kernels.xml"
if grep -q 'skipped="[1-9]' "$OUT_DIR/pytest_kernels.xml" 2>/dev/null; then
    say "fused kernels FAILED: tests were skipped on a machine with a GPU"
    status=1
fi

run_step "test suite on numpy and cupy" "${SUITE_TIMEOUT:-300}" \
    env MINIVLM_TEST_BACKENDS=numpy,cupy MINIVLM_BACKEND=cupy \
    python -m pytest tests -q -rfEs -m "not slow" -p no:cacheprovider \
    --junitxml="$OUT_DIR/pytest_suite.xml"

run_step "GPU benchmark" "${BENCH_TIMEOUT:-180}" \
    python benchmarks/gpu_bench.py --out "$OUT_DIR"

say "done: $([ $status -eq 0 ] && echo 'every step passed' || echo 'SOME STEP FAILED'); logs in $OUT_DIR"
exit $status
