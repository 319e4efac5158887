"""Thread limits for one solve: BLAS/LAPACK (through threadpoolctl) and torch's intra-op pool.

``threads=None`` (the default of every method's settings) leaves both as the user set them
(``OPENBLAS_NUM_THREADS`` and the like, ``torch.set_num_threads``); ``threads=n`` limits both
to n for the duration of the call and restores them afterwards.
"""

from __future__ import annotations

import contextlib
import sys

from .errors import MarginalError

__all__ = ["thread_limits"]


@contextlib.contextmanager
def thread_limits(threads: int | None):
    """Limit BLAS and torch threads to ``threads`` inside the block (None: no change)."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise MarginalError(f"threads must be None or an integer >= 1, got {threads!r}")
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # only when already loaded: the limit is not a reason
    before = torch.get_num_threads() if torch is not None else None  # to import it
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)
