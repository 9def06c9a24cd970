"""torch.cuda's questions, answered honestly: the GPU is there when CuPy runs on one
(MINIVLM_BACKEND=cupy puts new tensors there)."""
from . import backend


def is_available():
    """True when CuPy imports and a GPU answers."""
    return backend.cupy_available()


def device_count():
    return backend.module("cupy").cuda.runtime.getDeviceCount() if is_available() else 0


def synchronize():
    """Wait for the GPU's queued work (nothing to wait for without one)."""
    if is_available():
        backend.module("cupy").cuda.Device().synchronize()
