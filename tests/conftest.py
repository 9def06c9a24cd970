"""Hypothesis profiles and the `backend` fixture.

HYPOTHESIS_PROFILE=dev|ci|nightly picks the profile; without it, "ci" where the CI variable is set
(as CI systems and .ci/run do) and "dev" elsewhere.

    HYPOTHESIS_PROFILE=ci MINIVLM_TEST_BACKENDS=numpy,cupy python -m pytest
"""
import os

import pytest
from hypothesis import settings
from threadpoolctl import threadpool_limits

from minivlm.testing import available_backends

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("nightly", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """Tests multiply small matrices, where OpenBLAS's threads cost more than they give (and
    many times more when another process is busy): one thread, as the commands use by default."""
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="session", params=available_backends())
def backend(request):
    """The name of a backend to run on ("numpy", and "cupy" where a GPU answers)."""
    return request.param
