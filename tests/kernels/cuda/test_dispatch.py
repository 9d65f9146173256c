"""The fast-path switch and dispatch, on any machine: NumPy arrays never take a CUDA path, the
package imports without CuPy, and the GPU benchmark says clearly when there is no GPU."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minialex.kernels import activation, adam, conv, dropout, lrn, pool, sgd, softmax_xent
from minialex.kernels import cuda as fast_paths
from minialex.kernels.cuda import adam as cuda_adam
from minialex.kernels.cuda import conv as cuda_conv
from minialex.kernels.cuda import elementwise as cuda_elementwise
from minialex.kernels.cuda import lrn as cuda_lrn
from minialex.kernels.cuda import pool as cuda_pool
from minialex.kernels.cuda import sgd as cuda_sgd

REPO = Path(__file__).resolve().parents[3]
FAST_PATHS = [
    (cuda_conv, "im2col"), (cuda_conv, "col2im"),
    (cuda_pool, "max_pool2d_forward"), (cuda_pool, "max_pool2d_backward"),
    (cuda_lrn, "local_response_norm_forward"), (cuda_lrn, "local_response_norm_backward"),
    (cuda_elementwise, "relu_forward"), (cuda_elementwise, "relu_backward"),
    (cuda_elementwise, "dropout_forward"), (cuda_elementwise, "cross_entropy_backward"),
    (cuda_sgd, "sgd_update"), (cuda_adam, "adam_update"),
]


def test_numpy_arrays_never_reach_a_fast_path(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a NumPy array reached a CUDA fast path")

    for module, name in FAST_PATHS:
        monkeypatch.setattr(module, name, forbidden)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    out, cache = conv.conv2d_forward(x, rng.standard_normal((6, 2, 3, 3)).astype(np.float32), None, (1, 1), (1, 1), 2)
    conv.conv2d_backward(out, cache)
    out, cache = pool.max_pool2d_forward(x, 3, 2, 1)
    pool.max_pool2d_backward(out, cache)
    out, cache = lrn.local_response_norm_forward(x, 5, 1e-4, 0.75, 2.0)
    lrn.local_response_norm_backward(out, cache)
    out, positive = activation.relu_forward(x)
    activation.relu_backward(out, positive)
    dropout.dropout_forward(x, 0.5)
    _, cache = softmax_xent.cross_entropy_forward(x.reshape(2, -1), np.array([0, 1]))
    softmax_xent.cross_entropy_backward(np.asarray(1.0, np.float32), cache)
    p = x.copy()
    sgd.sgd_update(p, x, None, np.empty_like(p), 0.1, 0.9, 5e-4, True)
    adam.adam_update(p, x, np.zeros_like(p), np.zeros_like(p), np.empty_like(p), 1, 1e-3, 0.9, 0.999, 1e-8, 1e-2)


def test_active_is_false_for_numpy_arrays_and_while_switched_off():
    x = np.ones(3, np.float32)
    assert not fast_paths.active(x)
    with fast_paths.use_fast_paths(False):
        assert not fast_paths.enabled and not fast_paths.active(x)
    assert fast_paths.enabled


def test_use_fast_paths_restores_the_switch_after_an_error():
    with pytest.raises(ZeroDivisionError):
        with fast_paths.use_fast_paths(False):
            1 / 0
    assert fast_paths.enabled


def test_c_types_cover_the_fast_path_dtypes_and_refuse_others():
    assert fast_paths.c_type(np.float32) == "float" and fast_paths.c_type(np.float64) == "double"
    with pytest.raises(TypeError, match="float16"):
        fast_paths.c_type(np.float16)


BLOCK_CUPY = "import sys; sys.modules['cupy'] = None; sys.modules['cupyx'] = None; "


def test_the_package_and_its_fast_path_modules_import_without_cupy():
    code = BLOCK_CUPY + (
        "import minialex, minialex.kernels.cuda.conv, minialex.kernels.cuda.pool, minialex.kernels.cuda.lrn, "
        "minialex.kernels.cuda.elementwise, minialex.kernels.cuda.sgd, minialex.kernels.cuda.adam, benchmarks.gpu; "
        "assert not minialex.cuda.is_available(); print('imported')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_the_gpu_benchmark_exits_with_a_clear_message_without_cuda():
    code = BLOCK_CUPY + (
        "import runpy; sys.argv = ['benchmarks/gpu.py', '--quick']; "
        "runpy.run_path('benchmarks/gpu.py', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "needs CuPy and a CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr
