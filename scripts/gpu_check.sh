#!/usr/bin/env bash
# The GPU checks of the cuda backend, as one run on a machine with a GPU (the device tool's image: Python
# 3.12 with torch, torchvision, numba and numba-cuda, but numpy 2.5, with which numba-cuda fails to import).
#
#   here:   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#               "numpy==2.4.*" -d .gpu_wheels
#   there:  bash scripts/gpu_check.sh        (carrying .gpu_wheels; the output also goes to $OUT/gpu_check.txt)
#
# Runs the cuda backend's tests on the hardware, the CUDA-event figures (torch vs nbops, per-call overhead)
# and the CUDA benchmark group.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-.}/gpu_check.txt"
{
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    python3 -m pip install --quiet --no-deps --no-index .gpu_wheels/numpy-2.4*.whl
    export PYTHONPATH="$PWD"
    python3 -c "import numpy, numba, numba_cuda, torch; from numba import cuda; print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__, 'gpu', cuda.is_available())"
    python3 -m pytest tests/test_cuda_ops.py -q -p no:cacheprovider
    python3 benchmarks/cuda_events.py
    python3 -m pytest benchmarks/bench_cuda.py --benchmark-only -q -p no:cacheprovider --benchmark-columns=median,rounds
} 2>&1 | tee "$log"
