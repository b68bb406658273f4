"""VAE pictures: ancestral samples from fixed prior draws, reconstructions, latent manifold."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated

import lightning as L
import torch

from litlab.callbacks.figures import FigureCallback
from litlab.ranges import Ge, PositiveInt, Seed


class VAEFigures(FigureCallback):
    """Every epoch: decode the same ``num_samples`` prior draws z ~ N(0, I) (Bernoulli means and
    binary samples), reconstruct the first validation images, and for ``z_dim == 2`` decode a grid
    of latent points at Gaussian quantiles (the manifold). All go to TensorBoard; the sample grids
    of ``keep_epochs`` and every picture of the last epoch are saved as PNG.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        num_samples: PositiveInt = 64,
        num_reconstructions: Annotated[int, Ge(2)] = 32,
        keep_epochs: Sequence[PositiveInt] = (1, 10, 80),
        manifold_steps: Annotated[int, Ge(2)] = 20,
        seed: Seed = 0,
    ) -> None:
        super().__init__(dirpath)
        self.num_samples = num_samples
        self.num_reconstructions = num_reconstructions
        self.keep_epochs = set(keep_epochs)
        self.manifold_steps = manifold_steps
        self.seed = seed

    def prior_draws(self, z_dim: int, device: torch.device) -> torch.Tensor:
        """The fixed latent points decoded at every epoch (same seed, same points)."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.num_samples, z_dim, generator=generator).to(device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        last = epoch == trainer.max_epochs
        nrow = max(1, int(self.num_samples**0.5))
        was_training = pl_module.training
        pl_module.eval()
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        means, binary = pl_module.sample(self.prior_draws(pl_module.hparams.z_dim, pl_module.device),
                                         generator=generator)  # fmt: skip
        for kind, images in (("means", means), ("binary", binary)):
            keep = epoch in self.keep_epochs or last
            name = f"samples_{kind}_epoch{epoch:03d}.png" if keep else None
            self.log_grid(trainer, f"samples/{kind}", images, nrow, name)
        self._reconstructions(trainer, pl_module, last)
        if pl_module.hparams.z_dim == 2:
            self.log_grid(trainer, "samples/manifold", self.manifold(pl_module),
                          self.manifold_steps, "latent_manifold.png" if last else None)  # fmt: skip
        pl_module.train(was_training)

    @torch.no_grad()
    def _reconstructions(
        self, trainer: L.Trainer, pl_module: L.LightningModule, save: bool
    ) -> None:
        """Top row(s) originals, bottom row(s) decoded posterior means, for fixed val images."""
        datamodule = trainer.datamodule
        if datamodule is None or "val" not in getattr(datamodule, "splits", {}):
            return
        batch = datamodule.splits["val"][list(range(self.num_reconstructions))]
        batch = tuple(t.to(pl_module.device) for t in batch)
        x, _ = datamodule.on_after_batch_transfer(batch, 0)  # val pixels are fixed: no resampling
        recon = torch.sigmoid(pl_module(x))
        nrow = max(1, self.num_reconstructions // 2)
        pairs = torch.cat([x, recon])
        self.log_grid(trainer, "reconstructions", pairs, nrow,
                      "reconstructions.png" if save else None)  # fmt: skip

    @torch.no_grad()
    def manifold(self, pl_module: L.LightningModule) -> torch.Tensor:
        """Decoded Bernoulli means on a grid of z at the Gaussian quantiles 0.05 ... 0.95."""
        probs = torch.linspace(0.05, 0.95, self.manifold_steps)
        values = torch.distributions.Normal(0.0, 1.0).icdf(probs)
        z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")
        z = torch.stack([z1.flatten(), z2.flatten()], dim=1).to(pl_module.device)
        return torch.sigmoid(pl_module.decoder(z))
