"""Streamed and HDF5 training data (Section IV A)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from qmarginal import partial_trace  # noqa: E402
from qmarginal.errors import MarginalError  # noqa: E402
from qmarginal.learn.data import (  # noqa: E402
    DataSettings, HDF5Stream, MarginalStream, generate_batch, read_hdf5, validation_set,
    write_hdf5)
from qmarginal.learn.encoding import from_channels  # noqa: E402


@pytest.mark.parametrize("seed_state", ["hilbert_schmidt", "maximally_mixed"])
def test_batch_holds_mio_output_with_the_marginals(seed_state):
    s = DataSettings(4, seed_state=seed_state, precision="complex128")
    b = generate_batch(s, 6, torch.Generator().manual_seed(0))
    assert b["x"].shape == (6, 2, 16, 16) and b["x"].dtype == torch.float32
    assert b["sigma"].shape == (6, 4, 8, 8)
    assert ((b["rank"] >= 1) & (b["rank"] <= 16)).all()
    X = from_channels(b["x"].double())
    for i, J in enumerate(s.subsets):
        assert torch.allclose(partial_trace(X, J, 2), b["sigma"][:, i], atol=1e-6)
    assert torch.allclose(X, X.mH, atol=1e-6)


def test_settings_validation():
    assert DataSettings(5).k == 4
    with pytest.raises(MarginalError, match="N >= 3"):
        DataSettings(2)
    with pytest.raises(MarginalError, match="k must"):
        DataSettings(3, k=3)
    with pytest.raises(MarginalError, match="seed_state"):
        DataSettings(3, seed_state="pure")


def test_validation_set_ranks():
    v = validation_set(DataSettings(3), per_rank=3, seed=1)
    assert v["rank"].tolist() == [r for r in range(1, 9) for _ in range(3)]
    assert v["sigma"].dtype == torch.complex128


def _collect(stream, workers=0):
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    return list(loader)


def test_stream_reproducible_and_distinct_per_epoch_rank_worker():
    s = DataSettings(3)
    a = _collect(MarginalStream(s, 10, 40, seed=5))
    b = _collect(MarginalStream(s, 10, 40, seed=5))
    assert len(a) == 4 and all(torch.equal(x["x"], y["x"]) for x, y in zip(a, b))
    other = MarginalStream(s, 10, 40, seed=5)
    other.set_epoch(1)
    assert not torch.equal(_collect(other)[0]["x"], a[0]["x"])
    assert not torch.equal(_collect(MarginalStream(s, 10, 40, seed=5, rank=1))[0]["x"], a[0]["x"])
    w = _collect(MarginalStream(s, 10, 40, seed=5), workers=2)
    assert len(w) == 4 and sum(x["x"].shape[0] for x in w) == 40
    xs = torch.cat([x["x"] for x in w])
    assert len({tuple(r.flatten()[:4].tolist()) for r in xs}) == 40  # no duplicated samples


def test_hdf5_interrupted_and_resumed_equals_one_run(tmp_path):
    pytest.importorskip("h5py")
    s = DataSettings(3)
    one = write_hdf5(tmp_path / "one.h5", s, 50, seed=3, chunk_size=20)

    def stop_after_first(done, total):
        if done == 1:
            raise KeyboardInterrupt

    two = tmp_path / "two.h5"
    with pytest.raises(KeyboardInterrupt):
        write_hdf5(two, s, 50, seed=3, chunk_size=20, progress=stop_after_first)
    with pytest.raises(MarginalError, match="incomplete"):
        read_hdf5(two)
    part, attrs = read_hdf5(two, allow_partial=True)
    assert attrs["chunks_done"] == 1 and part["x"].shape[0] == 20
    write_hdf5(two, s, 50, seed=3, chunk_size=20)
    a, attrs_a = read_hdf5(one)
    b, attrs_b = read_hdf5(two)
    for key in ("x", "sigma", "rank"):
        np.testing.assert_array_equal(a[key], b[key])
    assert attrs_b["settings"]["n_qubits"] == 3 and attrs_b["seed"] == 3
    with pytest.raises(MarginalError, match="other settings"):
        write_hdf5(two, s, 50, seed=4, chunk_size=20)
    batches = list(HDF5Stream(one, 16, seed=0))
    assert sum(b["x"].shape[0] for b in batches) == 50


def test_hdf5_stream_gives_every_ddp_rank_the_same_number_of_batches(tmp_path):
    pytest.importorskip("h5py")
    path = write_hdf5(tmp_path / "d.h5", DataSettings(3), 110, seed=0, chunk_size=20)
    counts = []
    seen = []
    for rank in (0, 1):
        s = HDF5Stream(path, 8, seed=1, rank=rank, world_size=2)
        s.set_epoch(2)
        batches = list(s)
        counts.append(len(batches))
        seen.append(torch.cat([b["x"] for b in batches]))
        assert s.samples_per_epoch == 80
    assert counts[0] == counts[1] == 6  # two whole chunks of 20 each, batches 8 + 8 + 4
    assert not torch.equal(seen[0], seen[1])
