"""qmarginal: reconstruct density matrices from quantum marginals.

Sites are numbered 0..N-1 from the leftmost (most significant) tensor factor.
"""

from .compatibility import (
    Certificate,
    CompatibilityResult,
    CompatibilitySettings,
    check_compatibility,
)
from .errors import (IncompatibleMarginalsError, InsufficientMemoryError, MarginalError,
                     NotCertifiedError, OutputPathError, QMarginalError)
from .marginals import k_body_subsets, marginals
from .metrics import (
    StateReport,
    fidelity,
    mean_marginal_fidelity,
    nearest_density_matrix,
    state_report,
    trace_distance,
)
from .mio import impose
from .partial_trace import embed, partial_trace
from .problem import MarginalProblem, Tolerances
from .reconstruct import reconstruct
from .uniqueness import (UniquenessCertificate, UniquenessResult, UniquenessSettings,
                         check_uniqueness)
from .report import Reconstruction, Report
from .states import (
    bures_state,
    haar_ket,
    haar_pure_state,
    haar_unitary,
    hilbert_schmidt_state,
    rank_mixture_state,
    rng_from_seed,
)

from ._version import __version__ as __version__  # noqa: E402

__all__ = [
    "partial_trace",
    "embed",
    "marginals",
    "k_body_subsets",
    "impose",
    "MarginalProblem",
    "Tolerances",
    "QMarginalError",
    "MarginalError",
    "IncompatibleMarginalsError",
    "NotCertifiedError",
    "InsufficientMemoryError",
    "OutputPathError",
    "fidelity",
    "trace_distance",
    "state_report",
    "StateReport",
    "nearest_density_matrix",
    "mean_marginal_fidelity",
    "rng_from_seed",
    "haar_ket",
    "haar_pure_state",
    "haar_unitary",
    "hilbert_schmidt_state",
    "bures_state",
    "rank_mixture_state",
    "reconstruct",
    "Reconstruction",
    "Report",
    "check_compatibility",
    "CompatibilityResult",
    "CompatibilitySettings",
    "Certificate",
    "check_uniqueness",
    "UniquenessResult",
    "UniquenessCertificate",
    "UniquenessSettings",
]
