"""The VAE's mathematics: KL, reparameterisation, likelihood estimators against ground truth."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from lightning_modules.vae import VAE, bernoulli_log_prob, gaussian_kl, gaussian_log_prob
from litlab.errors import ConfigError

SIDE = 4  # tiny 1 x 4 x 4 binary "images"


class TinyEncoder(nn.Module):
    def __init__(self, z_dim: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2 * z_dim))  # fmt: skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x).chunk(2, dim=-1)


class TinyDecoder(nn.Module):
    def __init__(self, z_dim: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, SIDE * SIDE))  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, SIDE, SIDE)


def tiny_vae(z_dim: int = 2, **kwargs) -> VAE:
    return VAE(
        encoder={"_target_": f"{__name__}.TinyEncoder"},
        decoder={"_target_": f"{__name__}.TinyDecoder"},
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-2},
        z_dim=z_dim,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained_tiny() -> tuple[VAE, torch.Tensor]:
    """A z_dim=2 VAE fitted for a few hundred steps to noisy copies of two binary patterns,
    so that its posterior is far from the prior (the estimators have something to do)."""
    torch.manual_seed(0)
    patterns = torch.tensor([[1.0] * 8 + [0.0] * 8, [0.0, 1.0] * 8]).view(2, 1, SIDE, SIDE)
    flips = torch.rand(256, 1, SIDE, SIDE) < 0.1
    data = (patterns[torch.arange(256) % 2] + flips).remainder(2)
    model = tiny_vae()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        recon, kl = model.elbo_terms(data)
        loss = (recon + kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), data[:8]


def test_z_dim_is_set_once_for_both_nets() -> None:
    """model.z_dim reaches both nets by keyword; a net config may repeat it (older checkpoints
    stored it there) but not contradict it."""
    model = tiny_vae(z_dim=3)
    mu, _ = model.encoder(torch.zeros(1, 1, SIDE, SIDE))
    assert mu.shape == (1, 3) and model.decoder(mu).shape == (1, 1, SIDE, SIDE)
    stored = {"_target_": f"{__name__}.TinyEncoder", "z_dim": 3}
    decoder = {"_target_": f"{__name__}.TinyDecoder"}
    VAE(encoder=stored, decoder=decoder, optimizer={}, z_dim=3)
    with pytest.raises(ConfigError, match="z_dim=5.*set it once, at model.z_dim"):
        VAE(encoder=stored | {"z_dim": 5}, decoder=decoder, optimizer={}, z_dim=3)


def test_kl_closed_form_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros(7), torch.ones(7)), 1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p))


def test_log_probs_match_torch_distributions() -> None:
    torch.manual_seed(0)
    logits, x = torch.randn(3, 1, 4, 4), (torch.rand(3, 1, 4, 4) > 0.5).float()
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_prob(logits, x), expected)
    z, mu, logvar = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    expected = Independent(Normal(mu, (0.5 * logvar).exp()), 1).log_prob(z)
    torch.testing.assert_close(gaussian_log_prob(z, mu, logvar), expected)


def test_bernoulli_log_prob_is_minus_bce_for_grey_pixels_broadcast_draws_and_gradients() -> None:
    """sum x l - softplus(l) equals -BCE(l, x) summed, also for x in (0, 1) (non-binarised MNIST),
    for logits of K draws against one x (the estimators' broadcast), and in its gradient."""
    torch.manual_seed(0)
    logits = (4 * torch.randn(5, 3, 1, 6, 6)).requires_grad_()  # K=5 draws, B=3 images
    x = torch.rand(3, 1, 6, 6)
    reference = logits.detach().clone().requires_grad_()
    expected = (
        -F.binary_cross_entropy_with_logits(reference, x.expand_as(reference), reduction="none")
        .flatten(-3)
        .sum(-1)
    )
    got = bernoulli_log_prob(logits, x)
    assert got.shape == (5, 3)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(logits.grad, reference.grad)


def test_reparameterised_sample_carries_gradient_to_encoder() -> None:
    model = tiny_vae()
    x = (torch.rand(8, 1, SIDE, SIDE) > 0.5).float()
    recon, _ = model.elbo_terms(x)  # the KL term alone would also reach the encoder: leave it out
    recon.mean().backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_kl_warmup_ramps_the_weight() -> None:
    model = tiny_vae(beta=2.0, kl_warmup_steps=10)
    assert model.kl_weight() == pytest.approx(0.2)  # global_step 0 -> (0 + 1) / 10 * beta
    assert tiny_vae(beta=0.5).kl_weight() == 0.5


def test_importance_sampling_bounds_and_tightens(trained_tiny) -> None:
    """With a poor q(z|x) = N(0, 0.5^2 I) the ELBO is loose; IS-NLL <= -ELBO and falls with K."""
    trained, x = trained_tiny
    model = tiny_vae().eval()
    model.decoder.load_state_dict(trained.decoder.state_dict())
    head = model.encoder.net[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 0.0, 2 * math.log(0.5), 2 * math.log(0.5)]))
    torch.manual_seed(1)
    recon, kl = model.elbo_terms(x.repeat(500, 1, 1, 1))
    neg_elbo = (recon + kl).view(500, -1).mean(0)  # -ELBO per image (500 draws)
    nll = {k: -model.importance_sampled_log_px(x, k) for k in (1, 10, 1000)}
    assert (nll[1000] <= neg_elbo).all()
    assert nll[1000].mean() + 0.5 < nll[10].mean() < nll[1].mean()
    assert nll[1].mean() == pytest.approx(neg_elbo.mean().item(), abs=1.5)  # K = 1 is the ELBO


def test_importance_sampling_matches_numerical_integration(trained_tiny) -> None:
    """log p(x) = log \\int p(x|z) p(z) dz on a 2-D grid (Riemann sum) vs IS with K = 20000."""
    model, x = trained_tiny
    axis = torch.linspace(-7, 7, 401)
    step = (axis[1] - axis[0]).item()
    z = torch.cartesian_prod(axis, axis)  # (G, 2)
    with torch.no_grad():
        log_px_z = bernoulli_log_prob(model.decoder(z).unsqueeze(1), x)  # (G, B)
    log_pz = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)).unsqueeze(1)
    exact = (log_px_z + log_pz).logsumexp(0) + 2 * math.log(step)
    torch.manual_seed(2)
    estimate = model.importance_sampled_log_px(x, 20000)
    assert (estimate - exact).abs().max() < 0.1
    naive = model.naive_log_px(x, 20000)  # fine in 2-D, hopeless for 784 pixels (report Q2)
    assert (naive - exact).abs().max() < 0.2


@pytest.mark.parametrize("estimator", ["importance_sampled_log_px", "naive_log_px"])
def test_estimators_run_in_float32_under_autocast(trained_tiny, estimator: str) -> None:
    """Under bf16 autocast (trainer precision bf16-mixed) the estimates equal the float32 ones:
    bf16 noise in the log-weights would bias log-mean-exp (see ``float32`` in vae.py)."""
    model, x = trained_tiny
    torch.manual_seed(3)
    plain = getattr(model, estimator)(x, 200)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = getattr(model, estimator)(x, 200)
        assert model.decoder(torch.zeros(1, 2)).dtype == torch.bfloat16  # autocast is active
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain)
