"""Example marginal problems shipped with qmarginal (JSON files beside this module).

Each is the set of k-body marginals of a random global state of the stated rank, made by
``python -m qmarginal.examples`` (reproducible from the seeds below).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: name -> description; the file is ``<name>.json`` in this folder.
EXAMPLES = {
    "n3k2_rank2": "3 qubits, all 2-body marginals of a rank-2 state (seed 1)",
    "n4k3_rank2": "4 qubits, all 3-body marginals of a rank-2 state (seed 2)",
    "n5k2_rank1": "5 qubits, all 2-body marginals of a pure state (seed 3)",
    "qutrits_n3k2_rank3": "3 qutrits, all 2-body marginals of a rank-3 state (seed 4)",
    "ring6_rank4": "6 qubits, nearest-neighbour pairs on a ring, rank-4 state (seed 5)",
}

_SPECS = {
    "n3k2_rank2": dict(dims=(2, 2, 2), k=2, rank=2, seed=1),
    "n4k3_rank2": dict(dims=(2,) * 4, k=3, rank=2, seed=2),
    "n5k2_rank1": dict(dims=(2,) * 5, k=2, rank=1, seed=3),
    "qutrits_n3k2_rank3": dict(dims=(3, 3, 3), k=2, rank=3, seed=4),
    "ring6_rank4": dict(dims=(2,) * 6, subsets=[(i, (i + 1) % 6) for i in range(5)] + [(0, 5)],
                        rank=4, seed=5),
}


def example_path(name: str) -> Path:
    """Path of the shipped example file ``name``."""
    from ..errors import MarginalError

    if name not in EXAMPLES:
        raise MarginalError(f"no shipped example {name!r}; choose one of {sorted(EXAMPLES)}")
    return Path(str(resources.files(__package__).joinpath(f"{name}.json")))


def _write_all() -> None:  # pragma: no cover - run by hand to regenerate the files
    import math

    from ..problem import MarginalProblem
    from ..states import rank_mixture_state

    for name, spec in _SPECS.items():
        D = math.prod(spec["dims"])
        rho = rank_mixture_state(D, spec["rank"], seed=spec["seed"])
        if "subsets" in spec:
            sub = sorted(tuple(sorted(s)) for s in spec["subsets"])
            p = MarginalProblem.from_state(rho, subsets=sub, dims=spec["dims"])
        else:
            p = MarginalProblem.from_state(rho, k=spec["k"], dims=spec["dims"])
        p.save(Path(__file__).with_name(f"{name}.json"))
