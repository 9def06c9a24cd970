"""`minivlm info`: what minivlm runs on (versions, backend, BLAS, GPU)."""
import os
import platform

import numpy

from .. import __version__, backend


def describe():
    """A dict describing the machine and the libraries minivlm uses."""
    facts = {"minivlm": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
             "MINIVLM_BACKEND": os.environ.get("MINIVLM_BACKEND", "numpy (default)"),
             "default dtype": "float32", "cpu": platform.processor() or platform.machine(),
             "cores": os.cpu_count()}
    try:
        from threadpoolctl import threadpool_info
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                facts["blas"] = f"{pool['internal_api']} {pool.get('version')} " \
                                f"({pool.get('architecture')}, {pool['num_threads']} threads)"
    except ImportError:
        facts["blas"] = "unknown (pip install threadpoolctl to see it)"
    if backend.cupy_available():
        cupy = backend.module("cupy")
        props = cupy.cuda.runtime.getDeviceProperties(0)
        facts["cupy"] = cupy.__version__
        facts["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    else:
        facts["gpu"] = "none (CuPy not importable or no GPU answers)"
    return facts


def add_arguments(parser):
    pass


def run(args):
    for key, value in describe().items():
        print(f"{key:>16}: {value}")
