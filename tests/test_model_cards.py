"""Model cards and weights files that are malformed, tampered with or for another problem.

Each bad card is added to a copy of the shipped models folder, marked as the preferred model
(``default``, most samples) so that :func:`find_model` reaches it first. An explicit load refuses
it with one line naming the file and the field; ``find_model`` skips it with a warning and still
finds the shipped model; ``reconstruct(method="cdae")`` and ``"auto"`` keep working beside it.
"""

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from qmarginal import MarginalError, MarginalProblem, rank_mixture_state
from qmarginal.learn import weights as W
from qmarginal.learn.model import get_model
from qmarginal.learn.weights import (
    ModelCardError,
    ModelCardWarning,
    NoModelError,
    find_model,
    load_state_dict_file,
    load_weights,
    read_safetensors_header,
    save_weights,
    validate_card,
)
from qmarginal.reconstruct import reconstruct

SHIPPED = Path(W.__file__).resolve().parent.parent / "models"
GOOD = "n3k2_clip.json"


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory):
    d = tmp_path_factory.mktemp("shipped")
    for p in SHIPPED.iterdir():
        if p.suffix in (".json", ".safetensors"):
            shutil.copy(p, d / p.name)
    return d


@pytest.fixture
def models(tmp_path, shipped_copy):
    d = tmp_path / "models"
    shutil.copytree(shipped_copy, d)
    return d


@pytest.fixture(scope="module")
def problem():
    return MarginalProblem.from_state(rank_mixture_state(8, 2, seed=3), k=2)


def _sha(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _set(card, path, value):
    obj = card
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    return card


def _flip_byte(st: Path, card):
    data = bytearray(st.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's data: the header still parses
    st.write_bytes(bytes(data))
    return card


def _truncate(st: Path, card):
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    return card


def _huge_header(st: Path, card):
    data = st.read_bytes()
    st.write_bytes((2**62).to_bytes(8, "little") + data[8:])
    return card


def _header_past_end(st: Path, card):
    data = st.read_bytes()
    st.write_bytes((len(data)).to_bytes(8, "little") + data[8:])
    return card


def _wrong_shapes(st: Path, card):
    from safetensors.torch import save_file
    save_file(get_model("cdae_clip", scale=1).state_dict(), str(st))
    card["sha256"] = _sha(st)  # a consistent hash: only the shapes are wrong
    return card


def _no_weights(st: Path, card):
    st.unlink()
    return card


#: name -> (how the card and its weights are spoiled, what the refusal says)
BAD = {
    "list": (lambda st, c: [c], "JSON list, not an object"),
    "not_json": (lambda st, c: "{not json", "cannot read the model card"),
    "deep_json": (lambda st, c: "[" * 100_000, "cannot read the model card"),
    "missing_n_qubits": (lambda st, c: {k: v for k, v in c.items() if k != "n_qubits"},
                         "required field 'n_qubits' is missing"),
    "missing_k": (lambda st, c: {k: v for k, v in c.items() if k != "k"},
                  "required field 'k' is missing"),
    "scale_20000": (lambda st, c: _set(c, ("arch", "kwargs", "scale"), 20000),
                    "field 'arch.kwargs.scale' = 20000 is out of range"),
    "k_too_big": (lambda st, c: _set(c, ("k",), 7), "field 'k' = 7 is out of range"),
    "k_string": (lambda st, c: _set(c, ("k",), "2"), "field 'k' = '2' must be an integer"),
    "k_bool": (lambda st, c: _set(c, ("k",), True), "field 'k' = True must be an integer"),
    "n_qubits_huge": (lambda st, c: _set(c, ("n_qubits",), 40), "field 'n_qubits' = 40"),
    "format": (lambda st, c: _set(c, ("format",), "other"), "field 'format' = 'other'"),
    "version_newer": (lambda st, c: _set(c, ("version",), 2), "field 'version' = 2"),
    "loss_list": (lambda st, c: _set(c, ("loss",), ["model1"]), "field 'loss'"),
    "samples_str": (lambda st, c: _set(c, ("samples_seen",), "many"), "field 'samples_seen'"),
    "unknown_arch": (lambda st, c: _set(c, ("arch", "name"), "unet"),
                     "field 'arch.name' = 'unet' is not one of"),
    "unknown_kwarg": (lambda st, c: _set(c, ("arch", "kwargs", "activation"), "relu"),
                      "unknown field 'arch.kwargs.activation'"),
    "weights_path": (lambda st, c: _set(c, ("weights",), "../../etc/x.safetensors"),
                     "field 'weights'"),
    "bad_sha_format": (lambda st, c: _set(c, ("sha256",), "abc"), "field 'sha256' = 'abc'"),
    "sha_mismatch": (lambda st, c: _set(c, ("sha256",), "0" * 64), "does not match 000000000000"),
    "tampered": (_flip_byte, "SHA-256 .* does not match"),
    "truncated": (_truncate, "truncated"),
    "huge_header": (_huge_header, "header length 4611686018427387904 is more than"),
    "header_past_end": (_header_past_end, "truncated: the header needs"),
    "wrong_shapes": (_wrong_shapes, "do not fit the architecture"),
    "parameters": (lambda st, c: _set(c, ("parameters",), 5), "field 'parameters' = 5"),
    "missing_weights": (_no_weights, "no weights file bad_missing_weights.safetensors"),
}


def add_bad(d: Path, name: str) -> Path:
    """Add ``bad_<name>.json`` (and its weights) to ``d``, preferred over the shipped n3k2."""
    spoil, _ = BAD[name]
    card = json.loads((d / GOOD).read_text())
    card.update(default=True, samples_seen=10**9)
    st = d / f"bad_{name}.safetensors"
    shutil.copy(d / GOOD.replace(".json", ".safetensors"), st)
    out = spoil(st, card)
    js = d / f"bad_{name}.json"
    js.write_text(out if isinstance(out, str) else json.dumps(out))
    return js


@pytest.mark.parametrize("name", sorted(BAD))
def test_explicit_load_refuses_with_one_line(models, name):
    js = add_bad(models, name)
    with pytest.raises(ModelCardError, match=BAD[name][1]) as info:
        load_weights(js)
    msg = str(info.value)
    assert "\n" not in msg and f"bad_{name}" in msg, msg
    assert isinstance(info.value, MarginalError)


@pytest.mark.parametrize("name", sorted(BAD))
def test_find_model_skips_the_bad_card_with_a_warning(models, name):
    add_bad(models, name)
    with pytest.warns(ModelCardWarning, match=f"bad_{name}") as record:
        found = find_model(3, 2, models)
    assert found == models / GOOD
    assert all("\n" not in str(w.message) for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelCardWarning)
        assert find_model(4, 3, models).name == "n4k3_clip.json"  # other N unaffected


@pytest.mark.parametrize("name", ["list", "missing_n_qubits", "scale_20000", "tampered",
                                  "truncated", "huge_header", "wrong_shapes", "unknown_arch"])
def test_cdae_and_auto_work_beside_a_bad_card(models, problem, name):
    add_bad(models, name)
    with pytest.warns(ModelCardWarning, match=f"bad_{name}"):
        rec = reconstruct(problem, "cdae", models_dir=models)
    assert rec.report.info["model"] == str(models / GOOD)
    assert np.allclose(np.trace(rec.state), 1)
    with pytest.warns(ModelCardWarning, match=f"bad_{name}"):
        rec = reconstruct(problem, "auto", models_dir=models)
    info = rec.report.info
    assert info["auto_path"] == "cdae->exact" and info["auto_reason"] is None
    assert info["cdae"]["model"] == str(models / GOOD)
    assert rec.report.certified


@pytest.mark.parametrize("name", ["list", "tampered", "wrong_shapes"])
def test_an_explicit_bad_model_is_refused_by_cdae_and_auto(models, problem, name):
    js = add_bad(models, name)
    for method in ("cdae", "auto"):
        with pytest.raises(MarginalError, match=BAD[name][1]):
            reconstruct(problem, method, model=js)


def test_tampered_weights_name_the_file_and_both_hashes(models):
    js = add_bad(models, "tampered")
    st = js.with_suffix(".safetensors")
    want = json.loads(js.read_text())["sha256"]
    with pytest.raises(ModelCardError) as info:
        load_weights(st)  # through the weights' path as well
    msg = str(info.value)
    assert str(st) in msg and want[:12] in msg and _sha(st)[:12] in msg
    assert info.value.field == "sha256"


def test_scale_20000_is_refused_before_anything_is_built(models, monkeypatch):
    js = add_bad(models, "scale_20000")

    def no_build(*a, **kw):
        raise AssertionError("get_model called for a card that should have been refused")

    monkeypatch.setattr(W, "get_model", no_build)
    t0 = time.perf_counter()
    with pytest.raises(ModelCardError, match="arch.kwargs.scale' = 20000"):
        load_weights(js)
    assert time.perf_counter() - t0 < 1.0


def test_architecture_is_checked_on_the_meta_device(models, monkeypatch):
    """The shapes are compared with a model built on the meta device; the real model is built
    only after every check passed."""
    js = add_bad(models, "wrong_shapes")
    devices = []
    real = W.get_model

    def spy(*a, **kw):
        m = real(*a, **kw)
        devices.append(next(m.parameters()).device.type)
        return m

    monkeypatch.setattr(W, "get_model", spy)
    with pytest.raises(ModelCardError, match="decoder"):
        load_weights(js)
    assert devices == ["meta"]
    devices.clear()
    load_weights(models / GOOD)
    assert devices == ["meta", "cpu"]


def test_only_bad_cards_cdae_raises_and_auto_falls_back_saying_why(tmp_path, shipped_copy,
                                                                   problem):
    d = tmp_path / "only_bad"
    d.mkdir()
    shutil.copy(shipped_copy / GOOD, d / GOOD)
    shutil.copy(shipped_copy / GOOD.replace(".json", ".safetensors"),
                d / GOOD.replace(".json", ".safetensors"))
    add_bad(d, "tampered")
    add_bad(d, "list")
    for p in d.glob("n3k2_clip.*"):
        p.unlink()
    with pytest.warns(ModelCardWarning), pytest.raises(NoModelError, match="skipped 2") as info:
        reconstruct(problem, "cdae", models_dir=d)
    assert sorted(p.name for p, _ in info.value.skipped) == ["bad_list.json", "bad_tampered.json"]
    with pytest.warns(ModelCardWarning):
        rec = reconstruct(problem, "auto", models_dir=d)
    reason = rec.report.info["auto_reason"]
    assert rec.report.info["auto_path"] == f"fallback:{reason}"
    assert reason.startswith(f"no model for N=3 in {d}; skipped unusable card(s)")
    assert "bad_tampered.json (weights" in reason and "SHA-256" in reason
    assert "bad_list.json (model card" in reason
    assert rec.report.certified


def test_auto_falls_back_when_the_found_model_fails(models, problem, monkeypatch):
    import qmarginal.learn.pipeline as P

    def boom(*a, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(P, "cdae_states", boom)
    rec = reconstruct(problem, "auto", models_dir=models)
    assert rec.report.info["auto_reason"] == "model unusable: RuntimeError: boom"
    assert rec.report.info["auto_path"] == "fallback:model unusable: RuntimeError: boom"
    assert rec.report.certified


def test_env_models_folder_with_a_bad_card(models, problem, monkeypatch):
    add_bad(models, "list")
    monkeypatch.setenv("QMARGINAL_MODELS", str(models))
    with pytest.warns(ModelCardWarning, match="bad_list"):
        rec = reconstruct(problem, "cdae")
    assert rec.report.info["model"] == str(models / GOOD)


def test_a_model_serves_only_its_n_and_k_up_to_its_own(tmp_path, shipped_copy):
    d = tmp_path / "m"
    d.mkdir()
    for stem in ("n3k2_clip", "n4k3_clip"):
        for ext in (".json", ".safetensors"):
            shutil.copy(shipped_copy / (stem + ext), d / (stem + ext))
    card = json.loads((d / "n4k3_clip.json").read_text())
    (d / "n4k3_clip.json").write_text(json.dumps(dict(card, k=2)))  # now an N=4, k=2 model
    assert find_model(4, 2, d).name == "n4k3_clip.json"
    assert find_model(4, 1, d).name == "n4k3_clip.json"
    with pytest.raises(NoModelError, match="N = 4 qubits \\(k = 3\\)"):
        find_model(4, 3, d)  # k' = 2 < 3: not chosen (and not a warning: the card is valid)
    with pytest.raises(NoModelError):
        find_model(5, 4, d)
    p5 = MarginalProblem.from_state(rank_mixture_state(32, 2, seed=0), k=4)
    with pytest.raises(MarginalError, match="trained for N = 3, k = 2; the problem has N = 5"):
        reconstruct(p5, "cdae", model=d / "n3k2_clip.json")
    p4 = MarginalProblem.from_state(rank_mixture_state(16, 2, seed=0), k=3)
    with pytest.raises(MarginalError, match="k = 2; the problem has N = 4, k = 3"):
        reconstruct(p4, "cdae", model=d / "n4k3_clip.json")


def test_extra_informational_keys_are_tolerated(models):
    card = json.loads((models / GOOD).read_text())
    card["my_notes"] = {"anything": [1, 2, 3]}
    card["validation"] = "free-form"
    (models / GOOD).write_text(json.dumps(card))
    _, loaded = load_weights(models / GOOD)
    assert loaded["my_notes"] == {"anything": [1, 2, 3]}


def test_unknown_arch_key_is_refused():
    card = {"format": "qmarginal.model", "n_qubits": 3, "k": 2,
            "arch": {"name": "cdae", "kwargs": {}, "module": "os.system"},
            "weights": "a.safetensors", "sha256": "0" * 64}
    with pytest.raises(ModelCardError, match="unknown field 'arch.module'"):
        validate_card(card, "x.json")


def test_every_shipped_card_is_valid_and_verified():
    for js in sorted(SHIPPED.glob("*.json")):
        _, card = load_weights(js)
        assert card["n_qubits"] >= 3 and 1 <= card["k"] <= card["n_qubits"], js


def test_save_weights_writes_a_loadable_versioned_card_atomically(tmp_path):
    st, js = save_weights(get_model("cdae_clip", scale=1), tmp_path / "n3k2_tiny",
                          {"n_qubits": 3, "k": 2})
    card = json.loads(js.read_text())
    assert card["version"] == W.CARD_VERSION and card["sha256"] == _sha(st)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n3k2_tiny.json",
                                                          "n3k2_tiny.safetensors"]
    load_weights(js)
    with pytest.warns(ModelCardWarning, match="'n_qubits' is missing"):
        save_weights(get_model("cdae_clip", scale=1), tmp_path / "nok")
    assert (tmp_path / "nok.json").is_file()  # written anyway: no trained model is lost


def test_header_reader_and_init_from_refuse_bad_files(tmp_path):
    shapes = read_safetensors_header(SHIPPED / "n3k2_clip.safetensors")
    want = {k: tuple(v.shape) for k, v in get_model("cdae_clip", scale=4).state_dict().items()}
    assert {k: s for k, (_, s) in shapes.items()} == want
    bad = tmp_path / "bad.safetensors"
    shutil.copy(SHIPPED / "n3k2_clip.safetensors", bad)
    _huge_header(bad, None)
    with pytest.raises(ModelCardError, match="header length"):
        load_state_dict_file(bad)
    bad.write_bytes(b"1234")
    with pytest.raises(ModelCardError, match="truncated"):
        load_state_dict_file(bad)
