"""Encoders ``x -> (mu, logvar)`` and decoders ``z -> Bernoulli logits`` for the MNIST VAEs.

Every encoder returns the mean and log-variance of the diagonal Gaussian q(z|x); every decoder
returns logits of shape ``(B, 1, 28, 28)`` (one Bernoulli per pixel). Inputs are ``(B, 1, 28, 28)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from litlab.ranges import PositiveInt

IMAGE_SHAPE = (1, 28, 28)
NUM_PIXELS = 28 * 28


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


Channels3 = tuple[PositiveInt, PositiveInt, PositiveInt]  # one per conv layer


class GaussianHead(nn.Module):
    """Splits the last ``2 z_dim`` features into the mean and log-variance of q(z|x)."""

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


class GaussianEncoder(nn.Module):
    """What every encoder is: ``net`` maps x to 2 z_dim features, :class:`GaussianHead` splits
    them into the mean and log-variance of q(z|x). Subclasses build ``net`` from their sizes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head = GaussianHead()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.net(x))


class MLPEncoder(GaussianEncoder):
    """Report Q9: 784 -> 512 -> ReLU -> 256 -> ReLU -> 2 z_dim (mean, log-variance)."""

    def __init__(
        self, z_dim: PositiveInt = 20, hidden_dims: Sequence[PositiveInt] = (512, 256)
    ) -> None:
        super().__init__(nn.Sequential(nn.Flatten(), mlp([NUM_PIXELS, *hidden_dims, 2 * z_dim])))


class MLPDecoder(nn.Module):
    """Report Q9, reversed: z_dim -> 256 -> ReLU -> 512 -> ReLU -> 784 logits."""

    def __init__(
        self, z_dim: PositiveInt = 20, hidden_dims: Sequence[PositiveInt] = (256, 512)
    ) -> None:
        super().__init__()
        self.net = mlp([z_dim, *hidden_dims, NUM_PIXELS])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *IMAGE_SHAPE)


class ReportConvEncoder(GaussianEncoder):
    """Report Q11 encoder: conv 1->16->32->64 (k=3, no padding), max-pool 2 after the first two.

    Shapes: 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5 -conv-> 3, so the flattened map has
    64 * 3 * 3 = 576 features. Change to the report: it split that flattened vector directly into
    mean and variance, which cannot give 2 z_dim values; a Linear(576, 2 z_dim) is added.
    """

    def __init__(self, z_dim: PositiveInt = 20, channels: Channels3 = (16, 32, 64)) -> None:
        c1, c2, c3 = channels
        net = nn.Sequential(
            nn.Conv2d(1, c1, 3), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(c1, c2, 3), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3), nn.Flatten(),
            nn.Linear(c3 * 3 * 3, 2 * z_dim),
        )  # fmt: skip
        super().__init__(net)


class ReportConvDecoder(nn.Module):
    """Report Q11 decoder: transposed convs z_dim -> 16 -> 8 -> 4 -> 1 from a 1x1 map.

    The report's layers (k3 s2, k3 s3, k3 s2, k2 s2) give 1 -> 3 -> 9 -> 19 -> 38 pixels, not 28.
    Changes made to reach 28: the second layer uses stride 2 (1 -> 3 -> 7), the third adds
    padding 1 and output padding 1 (7 -> 14), the last is unchanged (14 -> 28). Output: logits.
    """

    def __init__(self, z_dim: PositiveInt = 20, channels: Channels3 = (16, 8, 4)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, c1, 3, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c1, c2, 3, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c2, c3, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c3, 1, 2, stride=2),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(*z.shape, 1, 1))


class DeepConvEncoder(GaussianEncoder):
    """Stronger CNN: two stride-2 stages (28 -> 14 -> 7) of conv pairs, then an MLP head.

    conv(1->c, 3) -> conv(c->c, 4, s2) -> conv(c->2c, 3) -> conv(2c->2c, 4, s2) -> 7x7 map
    -> Linear(2c*49, hidden) -> Linear(hidden, 2 z_dim). ReLU after every layer but the last.
    """

    def __init__(
        self, z_dim: PositiveInt = 20, channels: PositiveInt = 32, hidden_dim: PositiveInt = 512
    ) -> None:
        c = channels
        net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 2 * z_dim),
        )  # fmt: skip
        super().__init__(net)


class DeepConvDecoder(nn.Module):
    """Mirror of :class:`DeepConvEncoder`: MLP to a 7x7 map, two upsampling stages to 28x28."""

    def __init__(
        self, z_dim: PositiveInt = 20, channels: PositiveInt = 32, hidden_dim: PositiveInt = 512
    ) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 2 * c * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (2 * c, 7, 7)),
            nn.ConvTranspose2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
