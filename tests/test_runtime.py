"""Types at the boundary, import-time behaviour, threads and fork."""

import multiprocessing
import os
import subprocess
import sys
import shutil
import tempfile
import threading
import time
from queue import Empty

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nbops
from reference import assert_same, randn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, **env}, cwd=ROOT,
    )


def test_import_compiles_nothing_and_needs_no_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'): raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import nbops, numpy as np\n"
        "from nbops.cpu import pooling\n"
        "assert 'torch' not in sys.modules\n"
        "assert not pooling._max_pool2d.parallel.signatures, 'compiled at import'\n"
            "assert not pooling._max_pool2d.serial.signatures, 'compiled at import'\n"
        "out = nbops.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)\n"
        "assert out.tolist() == [[[[5.0, 7.0], [13.0, 15.0]]]], out\n"
        "print('ok')\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_tensor_in_tensor_out_without_copying_contiguous_input(monkeypatch):
    from nbops import _arrays

    x = randn((2, 3, 8, 8))
    seen = []
    original = _arrays.as_array

    def spy(obj, name, **kw):
        array = original(obj, name, **kw)
        seen.append((name, array))
        return array

    monkeypatch.setattr("nbops.pooling.as_array", spy)
    out = nbops.max_pool2d(x, 2)
    assert isinstance(out, torch.Tensor)
    name, array = seen[0]
    assert name == "input" and array.ctypes.data == x.data_ptr()  # the kernel read the tensor's memory


def test_tensor_requiring_grad_is_read_without_error():
    x = randn((1, 2, 4, 4)).requires_grad_()
    assert_same(nbops.max_pool2d(x, 2), F.max_pool2d(x, 2).detach())


def test_unsupported_objects_and_devices():
    with pytest.raises(TypeError, match="input must be a numpy.ndarray or a torch.Tensor"):
        nbops.sigmoid(3.0)
    meta = torch.zeros(2, 2, device="meta")
    with pytest.raises(RuntimeError, match="device 'meta'"):
        nbops.sigmoid(meta)
    sparse = torch.eye(3).to_sparse()
    with pytest.raises(TypeError, match="layout"):
        nbops.sigmoid(sparse)
    big_endian = np.arange(4.0).astype(">f8").reshape(1, 1, 2, 2)
    assert nbops.max_pool2d(big_endian, 2).item() == 3.0


def test_backend_variable(tmp_path):
    assert nbops.get_backend() == "cpu"
    result = _run("import nbops, numpy as np; nbops.sigmoid(np.zeros(2))", NBOPS_BACKEND="tpu")
    assert result.returncode != 0 and "NBOPS_BACKEND must be 'cpu' or 'cuda'" in result.stderr


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 8, 16, 16, generator=g)
    w = torch.randn(8, 8, 3, 3, generator=g)
    logits = torch.randn(64, 10, generator=g)
    target = torch.randint(0, 10, (64,), generator=g)
    rois = torch.tensor([[0, 1.0, 1.0, 10.0, 12.0], [3, 0.0, 2.0, 15.0, 15.0]])
    return x, w, logits, target, rois


def _nbops_results(seed):
    """Every operator once, on NumPy arrays (what a worker process would do)."""
    x, w, logits, target, rois = (t.numpy() for t in _inputs(seed))
    return [
        nbops.max_pool2d(x, 3, 2, 1),
        nbops.avg_pool2d(x, 2),
        nbops.conv2d(x, w, padding=1),
        nbops.conv_transpose2d(x, w, stride=2),
        nbops.sigmoid(x),
        nbops.batch_norm(x, None, None, training=True),
        nbops.cross_entropy(logits, target),
        nbops.mse_loss(x, x * 0.5),
        nbops.roi_pool(x, rois, 3),
        nbops.flatten(x, 1),
    ]


def _torch_results(seed):
    from torchvision.ops import roi_pool

    x, w, logits, target, rois = _inputs(seed)
    return [
        F.max_pool2d(x, 3, 2, 1),
        F.avg_pool2d(x, 2),
        F.conv2d(x, w, padding=1),
        F.conv_transpose2d(x, w, stride=2),
        torch.sigmoid(x),
        F.batch_norm(x, None, None, training=True),
        F.cross_entropy(logits, target),
        F.mse_loss(x, x * 0.5),
        roi_pool(x, rois, 3),
        torch.flatten(x, 1),
    ]


def _matches(results, seed):
    return all(
        np.allclose(a, b.numpy(), rtol=1e-4, atol=1e-4) for a, b in zip(results, _torch_results(seed), strict=True)
    )


def _all_ops_once(seed):
    return _matches(_nbops_results(seed), seed)


@pytest.fixture
def parallel_kernels(monkeypatch):
    """Small inputs, but the parallel kernels (whose threads are what threads and fork put at risk),
    and conv2d's 3x3 through Winograd's F(2x2, 3x3) (whose buffers each thread keeps)."""
    from nbops.cpu import _parallel, _winograd

    monkeypatch.setattr(_parallel, "SERIAL_BELOW", 0)
    monkeypatch.setattr(_winograd, "WINOGRAD_CHANNELS", 0)
    monkeypatch.setattr(_winograd, "WINOGRAD_BLOCKS", 0)


def test_four_threads_call_ops_at_once(parallel_kernels):
    assert _all_ops_once(0)  # compile first, in this thread
    results = [None] * 4
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait()
        results[i] = all(_all_ops_once(i * 10 + r) for r in range(5))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results == [True] * 4


def _child(queue):
    # Only nbops runs in the child: torch's own thread pool is not fork-safe after the parent used it,
    # which is why DataLoader workers set torch's threads to 1; the parent checks the results.
    queue.put(_nbops_results(7))


def test_forked_child_runs_ops_after_parent(parallel_kernels):
    assert _all_ops_once(1)  # the parent has run every parallel kernel
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue,))
    process.start()
    deadline = time.monotonic() + 300
    results = None
    while results is None and time.monotonic() < deadline:
        try:
            results = queue.get(timeout=1)
        except Empty:
            assert process.is_alive(), f"forked child died with exit code {process.exitcode}"
    process.join(timeout=60)
    assert process.exitcode == 0, f"forked child died with exit code {process.exitcode}"
    assert _matches(results, 7)


def test_torch_dataloader_workers_can_call_ops(parallel_kernels):
    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            x = torch.full((1, 4, 4), float(i))
            return nbops.max_pool2d(x, 2)

    nbops.max_pool2d(torch.zeros(1, 4, 4), 2)
    loader = torch.utils.data.DataLoader(Data(), batch_size=2, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert [b[:, 0, 0, 0].tolist() for b in batches] == [[0.0, 1.0], [2.0, 3.0]]


def test_threading_layer_is_tbb_when_installed():
    import numba

    from nbops import _config

    if _config.tbb_library is None:
        pytest.skip(f"tbb not available here: {_config.threading_note}")
    nbops.sigmoid(np.zeros(10))
    assert numba.threading_layer() == "tbb"


def test_read_only_numpy_inputs():
    x = np.random.default_rng(0).random((1, 2, 6, 6), dtype=np.float32)
    w = np.random.default_rng(1).random((3, 2, 3, 3), dtype=np.float32)
    x.setflags(write=False)
    w.setflags(write=False)
    np.testing.assert_allclose(
        nbops.conv2d(x, w, padding=1), F.conv2d(torch.from_numpy(x.copy()), torch.from_numpy(w.copy()), padding=1).numpy(),
        rtol=1e-5, atol=1e-5,
    )
    np.testing.assert_array_equal(nbops.max_pool2d(x, 2), F.max_pool2d(torch.from_numpy(x.copy()), 2).numpy())


def test_kernels_loaded_from_the_disk_cache_run(tmp_path):
    """Winograd's one-pass kernels pick their buffers by numba.get_thread_id, which a kernel loaded from
    Numba's on-disk cache calls without the threading layer started (address 0, a segfault), unless
    nbops starts it: the second process here loads what the first compiled, serial and parallel."""
    code = (
        "import numpy as np, torch, torch.nn.functional as F\n"
        "from nbops.cpu import _parallel, _winograd, _winograd_grad\n"
        "x, w = torch.randn(2, 3, 6, 7), torch.randn(4, 3, 3, 3)\n"
        "y, gy = F.conv2d(x, w, padding=1), torch.randn(2, 4, 6, 7)\n"
        "expected = torch.nn.grad.conv2d_weight(x, w.shape, gy, padding=1).reshape(4, -1)\n"
        "for serial_below in (1 << 30, 0):\n"
        "    _parallel.SERIAL_BELOW = serial_below\n"
        "    out = np.empty(y.shape, np.float32)\n"
        "    _winograd.run_winograd(x.numpy(), w.numpy(), np.zeros(4, np.float32), out, (1, 1))\n"
        "    grad = _winograd_grad.run_winograd_weight_grad(x.numpy(), gy.numpy(), (1, 1))\n"
        "    assert np.abs(out - y.numpy()).max() < 1e-4 and np.abs(grad - expected.numpy()).max() < 1e-4\n"
        "print('ok')\n"
    )
    for _ in range(2):  # (compiles and saves, then loads)
        result = _run(code, NUMBA_CACHE_DIR=str(tmp_path))
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as an unprivileged user")
def test_read_only_install_still_compiles_and_caches():
    # nbops copied where the user running it cannot write, with no usable home directory either:
    # numba alone would raise "no locator available"; nbops must pick a writable cache directory.
    from pathlib import Path

    unprivileged = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # The interpreter (a virtual environment inside a mode-700 directory, say) may be out of that user's
    # reach: then there is nothing to test here.
    probe = subprocess.run(unprivileged + [sys.executable, "-c", "import numpy, numba"], capture_output=True,
                           text=True, timeout=300, cwd="/")
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        pytest.skip(f"user nobody cannot run {sys.executable} with numpy and numba: {reason}")
    top = tempfile.mkdtemp(prefix="nbops-readonly-")  # pytest's tmp_path is private to root
    os.chmod(top, 0o755)
    install = Path(top) / "site"
    shutil.copytree(os.path.join(ROOT, "nbops"), install / "nbops", ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import numpy as np, nbops\n"
        "from nbops import _config\n"
        "print(nbops.__file__, _config.cache_dir)\n"
        "print(nbops.sigmoid(np.zeros(3, np.float32)).tolist())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(install), HOME="/nonexistent")
    command = unprivileged + [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd="/")
    assert result.returncode == 0, result.stderr
    path, cache = result.stdout.splitlines()[0].split()
    assert path.startswith(str(install)) and cache.startswith(tempfile.gettempdir())
    assert "[0.5, 0.5, 0.5]" in result.stdout
    assert any(name.endswith(".nbi") for _, _, files in os.walk(cache) for name in files)
    assert not (install / "nbops" / "cpu" / "__pycache__").exists()
    shutil.rmtree(top)


def test_cuda_backend_without_a_gpu_is_a_clear_error_at_the_first_call():
    """NBOPS_BACKEND=cuda imports fine anywhere; with no GPU (and no simulator) the first call says so."""
    code = (
        "import numpy as np, nbops\n"
        "assert nbops.get_backend() == 'cuda'\n"
        "from numba import cuda\n"
        "if cuda.is_available():\n"
        "    print('gpu present'); raise SystemExit(0)\n"
        "try:\n"
        "    nbops.sigmoid(np.zeros(3, np.float32))\n"
        "except RuntimeError as exc:\n"
        "    assert 'no usable CUDA GPU' in str(exc), exc\n"
        "    print('clear error')\n"
        "with nbops.use_backend('cpu'):\n"
        "    assert nbops.sigmoid(np.zeros(1, np.float32))[0] == 0.5\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["NBOPS_BACKEND"] = "cuda"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "clear error" in result.stdout or "gpu present" in result.stdout


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        nbops.set_backend("tpu")
    assert nbops.get_backend() == "cpu"
    with nbops.use_backend("cuda"):
        assert nbops.get_backend() == "cuda"
        with nbops.use_backend("cpu"):
            assert nbops.get_backend() == "cpu"
        assert nbops.get_backend() == "cuda"
    assert nbops.get_backend() == "cpu"


def test_use_backend_is_per_thread():
    seen = []
    with nbops.use_backend("cuda"):
        thread = threading.Thread(target=lambda: seen.append(nbops.get_backend()))
        thread.start()
        thread.join()
    assert seen == ["cpu"]


@pytest.mark.parametrize(
    "order,env,expected",
    [
        ("nbops first", {}, "1000"),  # nbops sets torch's OpenMP spin before torch loads
        ("torch first", {}, None),  # too late: torch's runtime has read its environment
        ("nbops first", {"GOMP_SPINCOUNT": "5"}, "5"),  # the user's setting wins
        ("nbops first", {"OMP_WAIT_POLICY": "ACTIVE"}, None),
    ],
)
def test_torch_openmp_spin_is_set_only_before_torch_and_never_over_the_user(order, env, expected):
    first, second = ("nbops", "torch") if order == "nbops first" else ("torch", "nbops")
    code = (
        f"import os, {first}, {second}\n"
        "from nbops import _config\n"
        "print(os.environ.get('GOMP_SPINCOUNT'))\n"
        "print(_config.openmp_note)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**clean, **env}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    value, note = result.stdout.splitlines()
    assert value == str(expected)
    assert ("imported before nbops" in note) == (order == "torch first")
