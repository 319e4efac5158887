"""Eq. (6) and the polar factor: PSD terms vanish on PSD inputs, gradients are right and finite."""

import pytest

torch = pytest.importorskip("torch")

from qmarginal import hilbert_schmidt_state, k_body_subsets, partial_trace  # noqa: E402
from qmarginal.errors import MarginalError  # noqa: E402
from qmarginal.learn.encoding import to_channels  # noqa: E402
from qmarginal.learn.loss import CDAELoss, polar_unitary  # noqa: E402

SUBSETS = k_body_subsets(3, 2)


def _targets(rho):
    return torch.stack([partial_trace(rho, J, 2) for J in SUBSETS], dim=1)


def test_psd_terms_vanish_for_psd_input():
    rho = hilbert_schmidt_state(8, batch=5, seed=torch.Generator().manual_seed(0))
    loss = CDAELoss(SUBSETS, dtype=torch.complex128)
    total, terms = loss(to_channels(rho), _targets(rho))
    assert terms["psd_re"] < 1e-20 and terms["psd_im"] < 1e-20
    assert terms["marginals"] < 1e-25 and total < 1e-20


def test_psd_terms_positive_for_indefinite_input_and_model2_drops_marginals():
    z = torch.diag(torch.tensor([0.6, 0.5, -0.1] + [0.0] * 5, dtype=torch.complex128))[None]
    z = z + 1e-3 * torch.eye(8)
    sigma = _targets(hilbert_schmidt_state(8, batch=1, seed=torch.Generator().manual_seed(1)))
    total, terms = CDAELoss(SUBSETS, dtype=torch.complex128)(to_channels(z), sigma)
    assert terms["psd_re"] == pytest.approx(4 / 64)  # one eigenvalue -1 instead of 1
    assert terms["marginals"] > 0
    _, t2 = CDAELoss(SUBSETS, kind="model2", weights={"trace": 2.0}, dtype=torch.complex128)(
        to_channels(z), sigma)
    assert "marginals" not in t2
    tr = 0.6 + 0.5 - 0.1 + 8e-3
    assert float(t2["trace"]) == pytest.approx(2 * (tr - 1) ** 2)
    with pytest.raises(MarginalError):
        CDAELoss(SUBSETS, kind="model3")
    with pytest.raises(MarginalError):
        CDAELoss(SUBSETS, weights={"psd": 1.0})


def test_polar_factor_gradcheck():
    z = torch.randn(1, 4, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(2),
                    requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: polar_unitary(a, 1e-12), (z,))


def test_loss_gradient_finite_differences_n3():
    """d(loss)/d(network output) against central finite differences, float64, N = 3."""
    g = torch.Generator().manual_seed(3)
    rho = hilbert_schmidt_state(8, batch=2, seed=g)
    sigma = _targets(rho)
    z = torch.randn(2, 2, 8, 8, dtype=torch.float64, generator=g) / 8
    loss = CDAELoss(SUBSETS, weights={"trace": 0.5}, dtype=torch.complex128)
    assert torch.autograd.gradcheck(lambda t: loss(t, sigma)[0], (z.requires_grad_(),),
                                    eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("case", ["identity", "zero", "rank_one", "repeated"])
def test_polar_gradient_finite_for_degenerate_spectra(case):
    D = 8
    z = {"identity": torch.eye(D, dtype=torch.complex128),
         "zero": torch.zeros(D, D, dtype=torch.complex128),
         "rank_one": torch.outer(torch.ones(D), torch.ones(D)).to(torch.complex128) / D,
         "repeated": torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, 0.5, 0.5, 0.0],
                                             dtype=torch.complex128))}[case]
    z = z.clone().requires_grad_()
    u = polar_unitary(z)
    ((u.real - torch.eye(D)).square().mean() + u.imag.square().mean()).backward()
    assert torch.isfinite(z.grad).all()


def test_negative_eigenvalue_term():
    z = torch.diag(torch.tensor([0.7, 0.4, -0.1] + [0.0] * 5, dtype=torch.complex128))[None]
    _, terms = CDAELoss(SUBSETS, weights={"negative": 1.0}, dtype=torch.complex128)(
        to_channels(z), _targets(z))
    assert float(terms["negative"]) == pytest.approx((8 * 0.1) ** 2)
    zz = z.clone().requires_grad_()
    loss, _ = CDAELoss(SUBSETS, kind="model2", weights={"negative": 1.0, "psd_re": 0, "psd_im": 0},
                       dtype=torch.complex128)(to_channels(zz), _targets(z))
    loss.backward()
    assert torch.isfinite(zz.grad).all() and zz.grad[0, 2, 2].real < 0  # pushes lambda up


def test_polar_terms_have_zero_gradient_at_hermitian_indefinite_z():
    """Why the optional "negative" term exists: Eq. (6)'s PSD terms give no signal there."""
    h = torch.randn(8, 8, dtype=torch.complex128, generator=torch.Generator().manual_seed(4))
    z = (0.5 * (h + h.mH)).requires_grad_()
    assert torch.linalg.eigvalsh(z.detach()).min() < 0
    _, terms = CDAELoss(SUBSETS, kind="model2", dtype=torch.complex128)(
        to_channels(z), torch.zeros(1, 3, 4, 4))
    assert terms["psd_re"] > 0.01
    u = polar_unitary(z)
    ((u.real - torch.eye(8)).square().mean() + u.imag.square().mean()).backward()
    assert z.grad.abs().max() < 1e-12
