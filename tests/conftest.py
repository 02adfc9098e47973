"""Fixtures shared by test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch and one BLAS thread.

    The models in these tests are small and the test machines have 2 shared cores: competing
    intra-op threads spin against each other and make small steps 5-30x slower than one thread.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)
