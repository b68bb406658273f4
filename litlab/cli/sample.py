"""Draw pictures from a trained VAE: prior samples, an interpolation, the latent manifold.

    litlab sample <vae ckpt> --n 64 --out grid.png [--seed S]
    litlab sample <vae ckpt> --interpolate --digits 0 1 --steps 10 --out interp.png
    litlab sample <vae ckpt> --manifold --steps 20 --out manifold.png        (z_dim = 2)

Prior samples: z ~ N(0, I), decoded to Bernoulli means p = sigmoid(f(z)), and one binary draw
x ~ Bernoulli(p) of each; both in one image, means in the left half and the binary draws of the
same samples in the right half (a grey column between them). ``--interpolate``: the posterior
means of two MNIST test digits (``--digits``, indices into the test split, read from
``--data-dir``) and the Bernoulli means decoded along the straight line between them, the two
digits at the ends of the row. ``--manifold`` (``z_dim=2`` only): Bernoulli means on a grid of
latents at the Gaussian quantiles 0.05 ... 0.95 of each axis.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from litlab.cli.common import (
    CommandParser,
    UsageError,
    add_data_dir,
    add_device,
    check_output,
    positive_int,
    run_command,
)


def build_parser(prog: str = "litlab sample") -> CommandParser:
    parser = CommandParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a VAE checkpoint (.ckpt) written by train.py")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--interpolate", action="store_true",
                      help="decode the line between two test digits (see --digits)")  # fmt: skip
    mode.add_argument("--manifold", action="store_true", help="the latent manifold (z_dim=2)")
    parser.add_argument("--n", type=positive_int, default=64, help="prior samples (default 64)")
    parser.add_argument("--out", type=Path, default=Path("samples.png"),
                        help="PNG to write (default samples.png)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the prior draws and binary samples (default: a fresh one)")  # fmt: skip
    parser.add_argument("--digits", type=int, nargs=2, default=(0, 1), metavar=("I", "J"),
                        help="--interpolate: test-set indices of the two digits (default 0 1)")  # fmt: skip
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="decoded points: per row of --manifold (default 20), along the line "
                             "of --interpolate (default 10)")  # fmt: skip
    add_data_dir(parser, "--interpolate (MNIST's test digits)")
    add_device(parser)
    return parser


def sample(args: argparse.Namespace, prog: str) -> None:
    check_output(args.out)
    if args.steps is not None and not (args.interpolate or args.manifold):
        raise UsageError(f"{prog}: --steps goes with --interpolate or --manifold")

    from litlab.cli.loading import load_model
    from litlab.plotting import save_grid

    loaded = load_model(args.checkpoint, "vae", args.device, command="sample")
    model, z_dim = loaded.model, loaded.model.hparams.z_dim
    if args.manifold:
        steps = args.steps or 20
        if z_dim != 2:
            raise UsageError(
                f"--manifold decodes a 2-D latent grid; {args.checkpoint} has z_dim={z_dim}"
            )
        save_grid(manifold(model, steps), args.out, nrow=steps)
        print(f"wrote {args.out}: the latent manifold, {steps} x {steps} Bernoulli means")
        return
    if args.interpolate:
        steps = args.steps or 10
        digits = test_digits(loaded, args.data_dir, args.digits)
        save_grid(interpolation(model, digits, steps), args.out, nrow=steps + 2)
        i, j = args.digits
        print(f"wrote {args.out}: test digits {i} and {j} at the ends, {steps} Bernoulli means "
              "decoded along the line between their posterior means")  # fmt: skip
        return
    seed = torch.Generator().seed() if args.seed is None else args.seed
    means, binary = prior_samples(model, args.n, seed)
    images, nrow = side_by_side(means, binary)
    save_grid(images, args.out, nrow=nrow)
    print(f"wrote {args.out}: {args.n} prior samples, Bernoulli means (left half) and binary "
          f"draws of the same samples (right half), seed {seed}")  # fmt: skip


@torch.no_grad()
def prior_samples(model: torch.nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws z ~ N(0, I) and their Bernoulli means and binary samples, ``(n, C, H, W)`` on
    the CPU; every random number comes from a CPU generator seeded with ``seed``, so the same seed
    gives the same pictures on any device."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.hparams.z_dim, generator=generator)
    means = torch.sigmoid(model.decoder(z.to(model.device))).float().cpu()
    return means, torch.bernoulli(means, generator=generator)


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Images for one grid whose rows hold ``k`` of ``left``, a grey tile, then the same ``k`` of
    ``right`` (k = ceil(sqrt(n)); missing tiles grey); returns them and the row length."""
    n = len(left)
    k = math.ceil(math.sqrt(n))
    blank = torch.full_like(left[:1], 0.5)
    tiles = []
    for start in range(0, n, k):
        missing = [blank] * (k - min(k, n - start))
        tiles += [left[start : start + k], *missing, blank, right[start : start + k], *missing]
    return torch.cat(tiles), 2 * k + 1


@torch.no_grad()
def manifold(model: torch.nn.Module, steps: int) -> torch.Tensor:
    """Bernoulli means on :func:`lightning_modules.vae.manifold_latents`'s grid, ``(steps², C, H, W)``."""
    from lightning_modules.vae import manifold_latents

    return torch.sigmoid(model.decoder(manifold_latents(steps).to(model.device))).float().cpu()


def test_digits(loaded: object, data_dir: Path, indices: Sequence[int]) -> torch.Tensor:
    """The test images ``indices`` as the model is tested on them (the checkpoint's data settings:
    binarised as in its run), ``(len(indices), 1, 28, 28)`` in [0, 1]."""
    from litlab.cli.loading import build_datamodule

    datamodule = build_datamodule(loaded.kind, loaded.checkpoint, data_dir, loaded.path)
    datamodule.setup("test")
    images = datamodule.splits["test"].tensors[0]
    for index in indices:
        if not 0 <= index < len(images):
            raise UsageError(
                f"--digits {index}: the test split holds digits 0 to {len(images) - 1}"
            )
    return images[list(indices)].unsqueeze(1).float() / 255


@torch.no_grad()
def interpolation(model: torch.nn.Module, digits: torch.Tensor, steps: int) -> torch.Tensor:
    """``[x_i, decode(z_0), ..., decode(z_1), x_j]`` with z_t = (1 - t) mu_i + t mu_j, ``steps``
    values of t from 0 to 1, mu the posterior means of the two digits; ``(steps + 2, C, H, W)``."""
    mu, _ = model.encoder(digits.to(model.device))
    t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(1)
    means = torch.sigmoid(model.decoder((1 - t) * mu[0] + t * mu[1])).float().cpu()
    return torch.cat([digits[:1], means, digits[1:]])


def main(argv: Sequence[str] | None = None, prog: str = "litlab sample") -> int:
    """``litlab sample``; returns the exit status (0, or 1 after one ``error:`` line)."""
    return run_command(build_parser, sample, argv, prog)
