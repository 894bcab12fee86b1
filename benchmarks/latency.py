"""JIT latency: `import nbops` plus one float32 call of each of the ten ops, in a new process.

    python benchmarks/latency.py

runs it twice with a fresh, empty NUMBA_CACHE_DIR (cold: every kernel compiles) and then three times with
that cache filled (warm: kernels load from disk). torch is not imported: the figures are nbops' own.

These small inputs run the kernels' serial twins (nbops/cpu/_parallel.py); `--parallel` makes the same
calls use the parallel kernels, which large inputs get and which take longer to compile.
"""

import os
import subprocess
import sys
import tempfile

ONE_CALL_EACH = r"""
import time
start = time.perf_counter()
import numpy as np
import nbops
if PARALLEL:
    import nbops.cpu._parallel
    nbops.cpu._parallel.SERIAL_BELOW = 0
x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
w = np.random.default_rng(1).random((4, 3, 3, 3), dtype=np.float32)
nbops.max_pool2d(x, 2)
nbops.avg_pool2d(x, 2)
nbops.conv2d(x, w, padding=1)
nbops.conv_transpose2d(x, np.ascontiguousarray(w.transpose(1, 0, 2, 3)))
wide = np.random.default_rng(2).random((2, 64, 16, 16), dtype=np.float32)  # (64 channels: Winograd's path)
nbops.conv2d(wide, np.random.default_rng(3).random((64, 64, 3, 3), dtype=np.float32), padding=1)
nbops.flatten(x, 1)
nbops.sigmoid(x)
nbops.roi_pool(x, np.array([[0, 0, 0, 4, 4]], np.float32), 2)
nbops.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True)
nbops.cross_entropy(x.reshape(6, 64), np.zeros(6, np.int64))
nbops.mse_loss(x, x * 0.5)
print(f"{time.perf_counter() - start:.2f}")
"""


def run_once(cache_dir: str, parallel: bool) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    code = f"PARALLEL = {parallel}\n" + ONE_CALL_EACH
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parallel = "--parallel" in sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="nbops-latency-") as cache:
        cold = run_once(cache, parallel)
        warm = [run_once(cache, parallel) for _ in range(3)]
    with tempfile.TemporaryDirectory(prefix="nbops-latency-") as cache:
        cold2 = run_once(cache, parallel)
    print("parallel kernels" if parallel else "serial twins (small inputs)")
    print(f"cold cache: {min(cold, cold2):.2f} s (runs: {cold:.2f}, {cold2:.2f}); target <= 60 s")
    print(f"warm cache: {min(warm):.2f} s (runs: {', '.join(f'{t:.2f}' for t in warm)}); target <= 2 s")


if __name__ == "__main__":
    main()
