"""Training data of Section IV A, generated on the fly in torch or written to HDF5.

One sample: a random N-qubit state rho of rank r (r uniform in [r_min, 2^N], ``rank_mixture_state``),
its k-body marginals sigma_J (k = N - 1 by default), the MIO output X = Q_{J_M} o ... o Q_{J_1}(seed)
(Eq. (5)) of a seed that is a Hilbert-Schmidt random state (the paper) or the maximally mixed state,
and X's two-channel image ``x`` (the network input). Everything is batched in torch: one call makes
a whole batch with no per-sample Python loop and no Kronecker product.

Randomness: every batch stream is a ``torch.Generator`` seeded from
``SeedSequence([seed, epoch, rank, worker])``, so a stream is reproducible from its seed, distinct
for every DataLoader worker and every DDP rank, and an epoch can be regenerated exactly (what makes
``--resume`` exact). The HDF5 writer seeds each chunk from ``SeedSequence([seed, chunk])``, so an
interrupted file is completed with exactly the data a single run would have written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import MarginalError
from ..marginals import k_body_subsets
from ..mio import impose
from ..partial_trace import partial_trace
from ..states import hilbert_schmidt_state, rank_mixture_state
from ._args import SEED_STATES
from .encoding import to_channels

__all__ = ["DataSettings", "generate_batch", "validation_set", "MarginalStream",
           "write_hdf5", "read_hdf5", "HDF5Stream", "stream_generator"]

PRECISIONS = {"complex64": torch.complex64, "complex128": torch.complex128}
_FORMAT = "qmarginal.dataset"


@dataclass(frozen=True)
class DataSettings:
    """How samples are drawn (Section IV A).

    Attributes:
        n_qubits: N (D = 2^N).
        k: marginals on all k-body subsets (default N - 1).
        r_min: smallest rank drawn; ranks are uniform in [r_min, 2^N].
        seed_state: MIO seed, "hilbert_schmidt" (paper) or "maximally_mixed".
        precision: complex dtype of the states, marginals and MIO ("complex64" or "complex128");
            the network input is float32 either way.
    """

    n_qubits: int
    k: int | None = None
    r_min: int = 1
    seed_state: str = "hilbert_schmidt"
    precision: str = "complex64"
    subsets: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.n_qubits < 3:
            raise MarginalError(f"the CDAE needs N >= 3 qubits, got {self.n_qubits}")
        if self.k is None:
            object.__setattr__(self, "k", self.n_qubits - 1)
        if not 1 <= self.k < self.n_qubits:
            raise MarginalError(f"k must be in 1..N-1 = {self.n_qubits - 1}, got {self.k}")
        if not 1 <= self.r_min <= self.dim:
            raise MarginalError(f"r_min must be in 1..{self.dim}, got {self.r_min}")
        if self.seed_state not in SEED_STATES:
            raise MarginalError(f"seed_state must be one of {SEED_STATES}, got {self.seed_state!r}")
        if self.precision not in PRECISIONS:
            raise MarginalError(f"precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "subsets", tuple(k_body_subsets(self.n_qubits, self.k)))

    @property
    def dim(self) -> int:
        return 2 ** self.n_qubits

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("subsets", None)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSettings":
        return cls(**{k: d[k] for k in ("n_qubits", "k", "r_min", "seed_state", "precision") if k in d})


def stream_generator(*keys: int, device="cpu") -> torch.Generator:
    """A torch Generator on ``device`` seeded from ``SeedSequence(keys)`` (independent streams)."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(seed)


def generate_batch(settings: DataSettings, batch_size: int, generator: torch.Generator, *,
                   rank: int | None = None) -> dict[str, torch.Tensor]:
    """One batch of training samples on the generator's device.

    Args:
        settings: the data settings.
        batch_size: number of samples.
        generator: torch Generator (its device is the batch's device).
        rank: a fixed rank for every sample (default: drawn uniformly in [r_min, 2^N]).

    Returns:
        dict with ``x`` (float32, ``(B, 2, D, D)``: the MIO output's image), ``sigma`` (complex,
        ``(B, M, d_J, d_J)``: the marginals in the order of ``settings.subsets``) and ``rank``
        (int64, ``(B,)``).

    Example:
        >>> b = generate_batch(DataSettings(3), 5, torch.Generator().manual_seed(0))
        >>> tuple(b["x"].shape), tuple(b["sigma"].shape)
        ((5, 2, 8, 8), (5, 3, 4, 4))
    """
    D, dt = settings.dim, settings.dtype
    rho, ranks = rank_mixture_state(D, rank, r_min=settings.r_min, batch=batch_size,
                                    seed=generator, dtype=dt, return_rank=True)
    sigma = torch.stack([partial_trace(rho, J, 2) for J in settings.subsets], dim=1)
    if settings.seed_state == "hilbert_schmidt":
        seed = hilbert_schmidt_state(D, batch=batch_size, seed=generator, dtype=dt)
    else:
        seed = (torch.eye(D, dtype=dt, device=rho.device) / D).expand(batch_size, D, D)
    X = impose(seed, {J: sigma[:, i] for i, J in enumerate(settings.subsets)}, dims=2)
    return {"x": to_channels(X, torch.float32), "sigma": sigma, "rank": ranks.to(torch.int64)}


def validation_set(settings: DataSettings, per_rank: int, seed: int = 1234, *,
                   ranks=None, device="cpu") -> dict[str, torch.Tensor]:
    """A fixed held-out set: ``per_rank`` samples of every rank in [r_min, 2^N] (or ``ranks``),
    generated in complex128 from ``seed`` (independent of the training streams)."""
    s128 = DataSettings(settings.n_qubits, settings.k, settings.r_min, settings.seed_state,
                        "complex128")
    ranks = list(range(settings.r_min, settings.dim + 1)) if ranks is None else list(ranks)
    parts = [generate_batch(s128, per_rank, stream_generator(seed, 7919, r, device=device), rank=r)
             for r in ranks]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


class MarginalStream(IterableDataset):
    """Batches generated on the fly: nothing stored, reproducible, worker- and DDP-safe.

    Use with ``DataLoader(stream, batch_size=None)`` (it yields whole batches). Call
    :meth:`set_epoch` before each epoch (as with ``DistributedSampler``).

    Args:
        settings: the data settings.
        batch_size: samples per yielded batch (per process).
        samples_per_epoch: samples per epoch for this DDP rank (None: infinite stream), split
            among DataLoader workers.
        seed: base seed.
        rank: DDP rank of this process (its streams differ from every other rank's).
        device: where batches are generated ("cpu" in DataLoader workers; "cuda" in-process).
    """

    def __init__(self, settings: DataSettings, batch_size: int = 100,
                 samples_per_epoch: int | None = None, *, seed: int = 0, rank: int = 0,
                 device="cpu"):
        super().__init__()
        self.settings, self.batch_size = settings, int(batch_size)
        self.samples_per_epoch, self.seed, self.rank = samples_per_epoch, int(seed), int(rank)
        self.device, self.epoch = device, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.samples_per_epoch is None:
            raise TypeError("an infinite stream has no length")
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        gen = stream_generator(self.seed, self.epoch, self.rank, wid, device=self.device)
        if self.samples_per_epoch is None:
            while True:
                yield generate_batch(self.settings, self.batch_size, gen)
        # whole batches are dealt to workers round-robin, so the epoch's batches are the same
        # size whatever the number of workers
        n_batches = len(self)
        for b in range(wid, n_batches, nw):
            size = min(self.batch_size, self.samples_per_epoch - b * self.batch_size)
            yield generate_batch(self.settings, size, gen)


# ---------------------------------------------------------------------------------- HDF5
def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover
        raise ImportError("HDF5 datasets need h5py: pip install 'qmarginal[data]'") from exc
    return h5py


def write_hdf5(path, settings: DataSettings, n_samples: int, *, seed: int = 0,
               chunk_size: int = 1000, device="cpu", progress=None) -> Path:
    """Write ``n_samples`` samples to an HDF5 file, resumably.

    Layout: datasets ``x`` (float32, ``(n, 2, D, D)``), ``sigma`` (complex, ``(n, M, d_J, d_J)``)
    and ``rank`` (int16, ``(n,)``), chunked by ``chunk_size`` samples; attributes ``format``,
    ``settings`` (JSON), ``subsets`` (JSON), ``seed``, ``n_samples``, ``chunk_size``,
    ``chunks_done`` and ``software``. Chunk c is generated from ``SeedSequence([seed, c])``. If the
    file exists with the same settings, writing resumes after its last completed chunk (so an
    interrupted run, rerun, gives the file a single run gives).

    Args:
        progress: optional callable ``progress(chunks_done, n_chunks)`` called after each chunk.

    Raises:
        MarginalError: the file exists with other settings, or is not a qmarginal dataset.
    """
    h5py = _h5py()
    from .._version import __version__

    path = Path(path)
    n_chunks = math.ceil(n_samples / chunk_size)
    D, M = settings.dim, len(settings.subsets)
    dJ = 2 ** settings.k
    want = {"format": _FORMAT, "settings": json.dumps(settings.to_dict(), sort_keys=True),
            "seed": int(seed), "n_samples": int(n_samples), "chunk_size": int(chunk_size)}
    mode = "a" if path.exists() else "w"
    with h5py.File(path, mode) as f:
        if mode == "a" and "format" in f.attrs:
            have = {key: f.attrs.get(key) for key in want}
            have = {k: (v.item() if hasattr(v, "item") else v) for k, v in have.items()}
            if have != want:
                raise MarginalError(
                    f"{path} already holds a dataset with other settings ({have}); "
                    f"wanted {want}. Use another path or delete the file.")
        else:
            if mode == "a":  # an unrelated or empty HDF5 file
                if len(f.keys()):
                    raise MarginalError(f"{path} is an HDF5 file but not a qmarginal dataset")
            cdt = np.complex64 if settings.precision == "complex64" else np.complex128
            ch = min(chunk_size, n_samples)
            f.create_dataset("x", (n_samples, 2, D, D), np.float32, chunks=(ch, 2, D, D))
            f.create_dataset("sigma", (n_samples, M, dJ, dJ), cdt, chunks=(ch, M, dJ, dJ))
            f.create_dataset("rank", (n_samples,), np.int16, chunks=(ch,))
            for key, val in want.items():
                f.attrs[key] = val
            f.attrs["subsets"] = json.dumps([list(J) for J in settings.subsets])
            f.attrs["software"] = f"qmarginal {__version__}, torch {torch.__version__}"
            f.attrs["chunks_done"] = 0
            f.flush()
        start = int(f.attrs["chunks_done"])
        for c in range(start, n_chunks):
            lo, hi = c * chunk_size, min(n_samples, (c + 1) * chunk_size)
            b = generate_batch(settings, hi - lo, stream_generator(seed, c, device=device))
            f["x"][lo:hi] = b["x"].cpu().numpy()
            f["sigma"][lo:hi] = b["sigma"].cpu().numpy()
            f["rank"][lo:hi] = b["rank"].cpu().numpy().astype(np.int16)
            f.attrs["chunks_done"] = c + 1
            f.flush()
            if progress is not None:
                progress(c + 1, n_chunks)
    return path


def read_hdf5(path, *, allow_partial: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Read a whole dataset written by :func:`write_hdf5`: (arrays, attributes).

    Raises:
        MarginalError: not a qmarginal dataset, or incomplete (unless ``allow_partial``).
    """
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        attrs = _check_file(f, path, allow_partial)
        n = attrs["n_available"]
        return {key: f[key][:n] for key in ("x", "sigma", "rank")}, attrs


def _check_file(f, path, allow_partial) -> dict:
    if f.attrs.get("format") != _FORMAT:
        raise MarginalError(f"{path} is not a qmarginal dataset (no format attribute)")
    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    attrs["settings"] = json.loads(attrs["settings"])
    n_chunks = math.ceil(attrs["n_samples"] / attrs["chunk_size"])
    if attrs["chunks_done"] < n_chunks and not allow_partial:
        raise MarginalError(
            f"{path} is incomplete ({attrs['chunks_done']} of {n_chunks} chunks); rerun "
            "`qmarginal generate` with the same arguments to finish it")
    attrs["n_available"] = min(attrs["n_samples"], attrs["chunks_done"] * attrs["chunk_size"])
    return attrs


class HDF5Stream(IterableDataset):
    """Batches from an HDF5 dataset, chunk by chunk, shuffled per epoch from ``seed``.

    Chunks are dealt round-robin to DDP ranks and DataLoader workers; within a chunk the samples
    are shuffled. With several DDP ranks only whole chunks are used, the same number per rank
    (so every rank takes the same number of steps); the remainder is skipped in that epoch.
    Use with ``DataLoader(stream, batch_size=None)``; call :meth:`set_epoch`.
    """

    def __init__(self, path, batch_size: int = 100, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        super().__init__()
        h5py = _h5py()
        with h5py.File(path, "r") as f:
            self.attrs = _check_file(f, path, allow_partial=False)
        self.settings = DataSettings.from_dict(self.attrs["settings"])
        self.path, self.batch_size, self.seed = str(path), int(batch_size), int(seed)
        self.rank, self.world_size, self.shuffle, self.epoch = rank, world_size, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def samples_per_epoch(self) -> int:
        """Samples used per epoch by all ranks together."""
        cs, n = self.attrs["chunk_size"], self.attrs["n_available"]
        if self.world_size > 1:
            return (n // cs) // self.world_size * self.world_size * cs
        return n

    def __iter__(self):
        h5py = _h5py()
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        cs, n = self.attrs["chunk_size"], self.attrs["n_available"]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(math.ceil(n / cs)) if self.shuffle else np.arange(math.ceil(n / cs))
        if self.world_size > 1:
            full = [c for c in order if (c + 1) * cs <= n]
            per_rank = len(full) // self.world_size
            order = np.asarray(full[:per_rank * self.world_size], dtype=np.int64)
        mine = order[self.rank * nw + wid::self.world_size * nw]
        with h5py.File(self.path, "r") as f:
            for c in mine:
                lo, hi = int(c) * cs, min(n, (int(c) + 1) * cs)
                x, sig, r = f["x"][lo:hi], f["sigma"][lo:hi], f["rank"][lo:hi]
                perm = rng.permutation(hi - lo) if self.shuffle else np.arange(hi - lo)
                for b in range(0, hi - lo, self.batch_size):
                    idx = np.sort(perm[b:b + self.batch_size])
                    yield {"x": torch.from_numpy(x[idx]), "sigma": torch.from_numpy(sig[idx]),
                           "rank": torch.from_numpy(r[idx].astype(np.int64))}
