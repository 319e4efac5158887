"""threads=: BLAS and torch thread limits for one solve, restored afterwards."""

import pytest
from threadpoolctl import threadpool_info

import qmarginal as qm
from qmarginal import MarginalError
from qmarginal.threads import thread_limits

torch = pytest.importorskip("torch")


def _blas_threads():
    return {(i["internal_api"], i["filepath"]): i["num_threads"] for i in threadpool_info()}


def test_thread_limits_apply_inside_and_restore_after():
    import numpy  # noqa: F401  (loads the BLAS that threadpoolctl reports)

    torch.set_num_threads(2)
    before = _blas_threads()
    with thread_limits(1):
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads().values())
    assert torch.get_num_threads() == 2 and _blas_threads() == before
    with thread_limits(None):  # no change
        assert torch.get_num_threads() == 2


def test_every_method_takes_threads_and_validates_it():
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 2, seed=3), k=2)
    torch.set_num_threads(2)
    rec = qm.reconstruct(p, threads=1)
    assert rec.certified and torch.get_num_threads() == 2
    assert qm.reconstruct(p, "mio", threads=1).report.method == "mio"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(MarginalError, match="threads"):
            qm.reconstruct(p, threads=bad)
