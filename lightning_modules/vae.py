"""Variational auto-encoder on binary (or grey-level) images.

Model: p(z) = N(0, I), p(x|z) = prod_m Bernoulli(x_m; sigmoid(f_theta(z)_m)),
q(z|x) = N(mu_phi(x), diag sigma_phi(x)^2). Training maximises the evidence lower bound

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x),

estimated with one reparameterised sample z = mu + sigma * eps, eps ~ N(0, I) (Kingma & Welling,
2014). The loss is -ELBO averaged over the batch: BCE summed over pixels + closed-form KL.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.base import STAGES, LitModule, running_mean
from litlab.ranges import NonNegativeFloat, NonNegativeInt, PositiveInt

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1).

    Closed form from Kingma & Welling (2014), appendix B. Returns one value per row, ``(B,)``.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)


def float32(estimator: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run a log p(x) estimator in float32, also inside a mixed-precision (autocast) context.

    In bf16 each log-weight log p(x|z_k) + log p(z_k) - log q(z_k|x) carries rounding noise of
    about a nat (784 pixel terms from logits with 8 significant bits), and log-mean-exp turns
    zero-mean noise e into a bias of about +Var(e)/2 (Jensen): an optimistic log-likelihood.
    """

    @functools.wraps(estimator)
    def wrapper(self: Any, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return estimator(self, x.float(), num_samples)

    return wrapper


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of q(z|x) that is differentiable in phi."""
    return mu + (0.5 * logvar).exp() * torch.randn_like(mu)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum_m x_m log s(l_m) + (1 - x_m) log(1 - s(l_m)) = -BCE summed over pixels.

    Computed as sum_m [x_m l_m - softplus(l_m)] (log s(l) = l - softplus(l), log(1 - s(l)) =
    -softplus(l)): one product-sum and one softplus over the logits, with ``x`` broadcast, not
    copied, to the ``K`` latent draws of the likelihood estimators (about 1.5x faster there than
    the element-wise BCE). ``logits`` and ``x`` broadcast to ``(..., C, H, W)``. Returns ``(...)``.
    """
    logits, x = logits.flatten(-3), x.flatten(-3)
    return torch.einsum("...m,...m->...", logits, x) - F.softplus(logits).sum(-1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag sigma^2) = -1/2 sum_j [log 2 pi + log sigma_j^2 + (z_j - mu_j)^2 / sigma_j^2]."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * (-logvar).exp()).sum(dim=-1)


def manifold_latents(steps: int) -> torch.Tensor:
    """A ``steps x steps`` grid of 2-D latents at the Gaussian quantiles 0.05 ... 0.95 of each axis
    (Kingma & Welling 2014, fig. 4), ``(steps**2, 2)`` in row-major order: z_1 grows to the right,
    z_2 downwards from its largest value. Decoded, it is the learned manifold of a ``z_dim=2`` VAE.
    """
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, steps))
    z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")
    return torch.stack([z1.flatten(), z2.flatten()], dim=1)


class VAE(LitModule):
    """The VAE objective, its evaluation (-ELBO, IS and naive log-likelihood) and sampling.

    Args:
        encoder, decoder: ``_target_`` configs of plain nets (``lightning_modules.nets.vae``);
            ``z_dim`` is filled in here.
        optimizer, scheduler: ``_target_`` configs (see :class:`LitModule`).
        z_dim: latent size, given to both nets.
        beta: weight of the KL term in the training loss (1 gives the ELBO).
        kl_warmup_steps: the KL weight grows linearly from 0 to ``beta`` over these steps.
        nll_num_samples: K for the importance-sampled log-likelihood at test time (0: skip).
        naive_num_samples: K for the naive prior-sampling estimator at test time (0: skip).
        nll_chunk_size: latent samples per image evaluated at once (bounds memory).
        compile: ``torch.compile`` the nets in place (see :class:`LitModule`).
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        decoder: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        z_dim: PositiveInt = 20,
        beta: NonNegativeFloat = 1.0,
        kl_warmup_steps: NonNegativeInt = 0,
        nll_num_samples: NonNegativeInt = 1000,
        naive_num_samples: NonNegativeInt = 1000,
        nll_chunk_size: PositiveInt = 100,
        compile: bool | Mapping[str, Any] | None = False,
    ) -> None:
        super().__init__(optimizer, scheduler, compile)
        self.save_hyperparameters()
        self.encoder = self.build_net(encoder, z_dim=z_dim)
        self.decoder = self.build_net(decoder, z_dim=z_dim)
        names = [f"{stage}/{name}" for stage in STAGES for name in ("loss", "recon", "kl")]
        self.metrics = nn.ModuleDict(
            {name: running_mean() for name in [*names, "test/nll_is", "test/nll_naive"]}
        )
        # told ``(estimator, samples done, K)`` after each chunk of a log p(x) estimator, e.g. by
        # litlab.callbacks.estimator_progress; it only reads, so the estimates do not depend on it
        self.chunk_listener: Callable[[str, int, int], None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction logits: decode the posterior mean."""
        mu, _ = self.encoder(x)
        return self.decoder(mu)

    def kl_weight(self) -> float:
        """beta, ramped linearly from 0 over the first ``kl_warmup_steps`` optimiser steps."""
        warmup = self.hparams.kl_warmup_steps
        ramp = min(1.0, (self.global_step + 1) / warmup) if warmup > 0 else 1.0
        return self.hparams.beta * ramp

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction term -log p(x|z), z ~ q(z|x) (one sample), and KL, ``(B,)``."""
        mu, logvar = self.encoder(x)
        logits = self.decoder(reparameterize(mu, logvar))
        return -bernoulli_log_prob(logits, x), gaussian_kl(mu, logvar)

    def _shared_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, batch_idx: int
    ) -> torch.Tensor:
        """-ELBO (with the KL weight when training); accumulates the stage's epoch means."""
        x, _ = batch
        recon, kl = self.elbo_terms(x)
        weight = self.kl_weight() if stage == "train" else 1.0
        per_image = recon + weight * kl
        for name, value in (("loss", per_image), ("recon", recon), ("kl", kl)):
            self.log_epoch(f"{stage}/{name}", value.detach(), batch_idx=batch_idx,
                           prog_bar=name == "loss")  # fmt: skip
        return per_image.mean()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        loss = self._shared_step(batch, "train", batch_idx)
        if self.epoch_log_due(batch_idx):  # the weight at the epoch's start (per step: ~2 ms)
            self.log("train/kl_weight", self.kl_weight(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val", batch_idx)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test", batch_idx)
        x, _ = batch
        for name, num_samples, estimator in (
            ("nll_is", self.hparams.nll_num_samples, self.importance_sampled_log_px),
            ("nll_naive", self.hparams.naive_num_samples, self.naive_log_px),
        ):
            if num_samples > 0:
                self.log_epoch(f"test/{name}", -estimator(x, num_samples), batch_idx=batch_idx)

    @torch.no_grad()
    @float32
    def importance_sampled_log_px(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K, z_k ~ q(z|x).

        The importance-weighted estimator of Burda et al. (2016): a lower bound on log p(x) in
        expectation that tightens as K grows (K = 1 gives the ELBO). Chunked over K. ``(B,)``.
        """
        mu, logvar = self.encoder(x)
        std = (0.5 * logvar).exp()

        def log_weights(k: int) -> torch.Tensor:
            z = mu + std * torch.randn(k, *mu.shape, device=mu.device, dtype=mu.dtype)
            log_px_z = bernoulli_log_prob(self._decode_many(z), x)
            log_pz = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
            return log_px_z + log_pz - gaussian_log_prob(z, mu, logvar)

        return self._log_mean_exp(log_weights, num_samples, "nll_is")

    @torch.no_grad()
    @float32
    def naive_log_px(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """log p(x) ~= logsumexp_l log p(x|z_l) - log L with z_l ~ p(z) (report Q2).

        Unbiased for p(x) but almost every prior sample explains x badly, so for images the
        estimate of log p(x) is far too low unless L is astronomically large. ``(B,)``.
        """
        batch, z_dim = x.shape[0], self.hparams.z_dim

        def log_weights(k: int) -> torch.Tensor:
            z = torch.randn(k, batch, z_dim, device=x.device, dtype=x.dtype)
            return bernoulli_log_prob(self._decode_many(z), x)

        return self._log_mean_exp(log_weights, num_samples, "nll_naive")

    def _decode_many(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``(K, B, z_dim)`` latents to logits ``(K, B, C, H, W)`` in one call."""
        logits = self.decoder(z.flatten(0, 1))
        return logits.view(*z.shape[:2], *logits.shape[1:])

    def _log_mean_exp(self, log_weights: Any, num_samples: int, name: str) -> torch.Tensor:
        """log (1/K) sum_k exp(w_k), with the K weights drawn ``nll_chunk_size`` at a time;
        ``chunk_listener`` (if set) hears ``(name, samples done, K)`` after each chunk."""
        size, chunks = self.hparams.nll_chunk_size, []
        for start in range(0, num_samples, size):
            k = min(size, num_samples - start)
            chunks.append(log_weights(k))
            if self.chunk_listener is not None:
                self.chunk_listener(name, start + k, num_samples)
        return torch.cat(chunks).logsumexp(dim=0) - math.log(num_samples)

    @torch.no_grad()
    def sample(
        self, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestral sampling from given prior draws: Bernoulli means and binary samples."""
        probs = torch.sigmoid(self.decoder(z))
        return probs, torch.bernoulli(probs, generator=generator)
