#!/usr/bin/env bash
# Issue 16's GPU check in one call: the CUDA tests of the training step, then bench_gpu.py.
#
#   bash benchmarks/gpu_run.sh wheels            # here (with PyPI): the wheels a bare GPU image lacks, into .whl/
#   bash benchmarks/gpu_run.sh run [SECONDS [ARGS]]  # on the GPU machine: tests, then bench_gpu.py ARGS within SECONDS
#
# A bare GPU image with torch but without this project's small dependencies, and without a
# network, gets them from .whl/ (pydantic and its own needs, for Python 3.12 on x86-64;
# PYTHON_VERSION overrides). `run` writes its logs and bench_gpu.py's results
# (gpu_step_cuda.json and .md) into $OUT, else into benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
# The versions this project's CPU install resolves to (pydantic pins its core exactly).
PACKAGES=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
          typing-extensions==4.16.0)

case "${1:-}" in
wheels)
    mkdir -p "$WHEELS"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" "${PACKAGES[@]}"
    ls "$WHEELS"
    ;;
run)
    limit="${2:-420}"
    shift $(( $# < 2 ? $# : 2 ))
    out="${OUT:-benchmarks/results}"
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if ! python3 -c "import pydantic" 2>/dev/null; then
        ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no pydantic here and no $WHEELS/: run 'bash $0 wheels' where pip reaches PyPI, and carry $WHEELS"; exit 2; }
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
    nvidia-smi -L || true
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    # The captured step against the eager one, and the CPU-side equivalence, on this machine.
    timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_static_step.py tests/test_step_equivalence.py \
        2>&1 | tee "$out/gpu_tests.log" || echo "the tests failed or timed out: the benchmark runs anyway"
    python3 benchmarks/bench_gpu.py --time-limit "$limit" --out "$out" "$@" 2>&1 | tee "$out/gpu_bench.log"
    ;;
*)
    echo "usage: bash $0 wheels | run [SECONDS [bench_gpu.py ARGS]]" >&2
    exit 2
    ;;
esac
