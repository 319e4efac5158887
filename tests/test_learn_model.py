"""The CDAE of Appendix A: shapes for N = 3..9, parameter counts, variants, freezing."""

import pytest

torch = pytest.importorskip("torch")

from qmarginal.errors import MarginalError  # noqa: E402
from qmarginal.learn.encoding import from_channels, to_channels  # noqa: E402
from qmarginal.learn.model import (  # noqa: E402
    CDAE, count_parameters, freeze, get_model, list_models)


def tables_count(S: int) -> int:
    """Parameters implied by Tables I-II: weights + biases of every (T)Conv layer."""
    c = 10 * S
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    enc = conv(2, c, 3) + 2 * conv(c, c, 3)
    dec = conv(c, c, 3) + conv(c, c, 5) + conv(c, c, 6) + conv(c, 2, 3)
    return enc + dec


@pytest.mark.parametrize("S", [1, 10])
def test_parameter_count_matches_tables(S):
    assert count_parameters(get_model("cdae", scale=S)) == tables_count(S)


def test_parameter_count_paper_value():
    assert count_parameters(get_model("cdae", scale=10)) == 884_202


@pytest.mark.parametrize("n", range(3, 10))
def test_output_shape_equals_input_shape(n):
    D = 2**n
    model = get_model("cdae", scale=1)
    x = torch.randn(1, 2, D, D)
    assert model(x).shape == x.shape


@pytest.mark.parametrize("name", ["cdae", "cdae_residual", "cdae_psd"])
def test_variants_shapes_and_gradient_reaches_input(name):
    model = get_model(name, scale=1, depth=1)
    x = torch.randn(3, 2, 16, 16, requires_grad=True)
    y = model(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_psd_output_is_a_density_matrix():
    model = get_model("cdae_psd", scale=1)
    Z = from_channels(model(torch.randn(4, 2, 8, 8)).double())
    w = torch.linalg.eigvalsh(Z)
    assert (w > -1e-12).all()
    assert torch.allclose(Z.diagonal(dim1=-2, dim2=-1).sum(-1).real, torch.ones(4, dtype=torch.float64))


def test_residual_starts_from_its_hermitian_input():
    model = get_model("cdae_residual", scale=1)
    X = torch.randn(2, 8, 8, dtype=torch.complex64)
    X = 0.5 * (X + X.mH)
    assert torch.allclose(from_channels(model(to_channels(X))), X, atol=1e-6)


@pytest.mark.parametrize("output", ["psd", "clip_psd", "direct", "hermitian"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("normalize_input", [False, True])
def test_state_is_the_forward_output(output, residual, normalize_input):
    """state() (complex128 Z, the Gram product in double precision for the PSD outputs) is
    forward()'s output: it used to drop the residual of residual=True with a psd/clip_psd
    output (a difference of 0.2)."""
    torch.manual_seed(0)
    model = CDAE(scale=1, output=output, residual=residual, normalize_input=normalize_input)
    with torch.no_grad():  # a trained-looking last layer (residual models start at zero)
        model.last_layer.weight.normal_(0, 0.05)
        model.last_layer.bias.normal_(0, 0.05)
    X = torch.randn(3, 8, 8, dtype=torch.complex64)
    x = to_channels(0.5 * (X + X.mH) / 8)
    want = from_channels(model(x).detach()).to(torch.complex128)
    got = model.state(x)
    assert got.dtype == torch.complex128
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_encoding_round_trip():
    X = torch.randn(3, 8, 8, dtype=torch.complex128)
    t = to_channels(X)
    assert t.shape == (3, 2, 8, 8) and t.dtype == torch.float64
    assert torch.equal(from_channels(t), X)


def test_freeze_levels_trainable_counts():
    model = get_model("cdae", scale=10)
    total = 884_202
    c = 100
    encoder = (2 * c * 9 + c) + 2 * (c * c * 9 + c)
    last = c * 2 * 9 + 2
    assert freeze(model, "none") == total
    assert freeze(model, "encoder") == total - encoder
    assert count_parameters(model, trainable_only=True) == total - encoder
    assert freeze(model, "all-but-last") == last
    assert freeze(model, "none") == total
    with pytest.raises(MarginalError, match="freeze"):
        freeze(model, "decoder")


def test_registry_and_errors():
    assert {"cdae", "cdae_residual", "cdae_psd"} <= set(list_models())
    m = get_model("cdae_residual", scale=2)
    assert m.arch == {"name": "cdae_residual", "kwargs": {"scale": 2}}
    with pytest.raises(MarginalError, match="unknown model"):
        get_model("unet")
    with pytest.raises(MarginalError, match="output"):
        CDAE(output="square")
    with pytest.raises(MarginalError, match="N >= 3"):
        get_model("cdae", scale=1)(torch.zeros(1, 2, 4, 4))


def test_cli_parser_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, qmarginal.cli as c; p = c.get_args_parser(); "
            "a = p.parse_args(['train', '-N', '4']); assert a.n_qubits == 4; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
