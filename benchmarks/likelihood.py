"""``python -m benchmarks.likelihood``: the VAE's importance-sampled log p(x) pass on the CPU.

The K = 5000 test pass of ``experiment=vae_mlp_likelihood`` decodes 10,000 x 5,000 latent draws:
longer than the training. This times ``VAE.importance_sampled_log_px`` (K draws per image, chunks
of ``nll_chunk_size`` draws per image decoded at once) on N binarised images with a freshly built
VAE-MLP of that experiment's shape (784-512-256, z 32; the weights do not change the cost), for
several chunk sizes, against a baseline: the same estimator with the pixel log-likelihood taken
from torch's element-wise ``binary_cross_entropy_with_logits`` (``x`` broadcast to the K draws) in
chunks of 100 draws, litlab's code before this benchmark. The variants of a repetition run back to
back in one process, their order reversed every other repetition; the ratio to the baseline is
taken within a repetition and its median over repetitions reported, with every variant's estimate
checked against the baseline's (same random draws).

    python -m benchmarks.likelihood [--images N] [--samples K] [--chunks C ...] [--repeats R]
                                    [--threads T] [--out benchmarks/RESULTS_likelihood.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

import lightning_modules.vae as vae_module
from benchmarks.report import machine
from lightning_modules.vae import VAE

BASELINE = "baseline: element-wise BCE, chunk 100"


def elementwise_bce_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) as -BCE(logits, x) element by element, summed over pixels (the baseline)."""
    logits, x = torch.broadcast_tensors(logits, x)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(-3).sum(-1)


def build_vae(z_dim: int = 32) -> VAE:
    """experiment=vae_mlp_likelihood's network: MLP 784-512-256 encoder, its mirror decoder."""
    nets = "lightning_modules.nets.vae"
    return VAE(
        encoder={"_target_": f"{nets}.MLPEncoder", "hidden_dims": [512, 256]},
        decoder={"_target_": f"{nets}.MLPDecoder", "hidden_dims": [256, 512]},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
        z_dim=z_dim,
    ).eval()


def time_pass(model: VAE, x: torch.Tensor, samples: int, chunk: int, baseline: bool) -> tuple:
    """Seconds of one estimator pass and its mean log p(x), the draws seeded identically."""
    model.hparams.nll_chunk_size = chunk
    patch = mock.patch.object(vae_module, "bernoulli_log_prob", elementwise_bce_log_prob)
    with patch if baseline else contextlib.nullcontext():
        torch.manual_seed(0)
        start = time.perf_counter()
        log_px = model.importance_sampled_log_px(x, samples)
        return time.perf_counter() - start, float(log_px.mean())


def run(images: int, samples: int, chunks: Sequence[int], repeats: int) -> dict:
    """Every variant ``repeats`` times; per-variant seconds, ratio to the baseline, estimates."""
    torch.manual_seed(12345)
    model = build_vae()
    x = torch.bernoulli(torch.full((images, 1, 28, 28), 0.13))  # MNIST's share of ink
    variants = [(BASELINE, 100, True)] + [(f"litlab, chunk {c}", c, False) for c in chunks]
    seconds = {name: [] for name, _, _ in variants}
    estimates = {}
    for rep in range(repeats):
        for name, chunk, baseline in variants if rep % 2 == 0 else variants[::-1]:
            elapsed, estimates[name] = time_pass(model, x, samples, chunk, baseline)
            seconds[name].append(elapsed)
    reference = estimates[BASELINE]
    for name, value in estimates.items():
        if abs(value - reference) > 1e-3 * abs(reference):
            raise AssertionError(f"{name}: mean log p(x) {value} differs from {reference}")
    ratios = {
        name: statistics.median(b / s for b, s in zip(seconds[BASELINE], secs, strict=True))
        for name, secs in seconds.items()
    }
    return {"images": images, "samples": samples, "repeats": repeats,
            "threads": torch.get_num_threads(), "machine": machine(), "seconds": seconds,
            "speed-up": ratios, "mean log p(x)": estimates}  # fmt: skip


def markdown(result: dict) -> str:
    """The result as a Markdown table: median seconds and speed-up over the baseline."""
    draws = result["images"] * result["samples"]
    lines = [
        "# The VAE's importance-sampled log-likelihood pass (`python -m benchmarks.likelihood`)",
        "",
        f"{result['images']} images x K = {result['samples']} draws ({draws:,} decoded images), "
        f"{result['threads']} torch thread(s), {result['repeats']} repetitions.",
        "",
        *result["machine"],
        "",
        "| variant | median s | draws per s | speed-up vs baseline (median of ratios) |",
        "|---|---:|---:|---:|",
    ]
    for name, secs in result["seconds"].items():
        median = statistics.median(secs)
        lines.append(f"| {name} | {median:.2f} | {draws / median:,.0f} | "
                     f"{result['speed-up'][name]:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200, help="K draws per image")
    parser.add_argument("--chunks", type=int, nargs="+", default=[100, 20, 5, 2, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS_likelihood.md"))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args.images, args.samples, args.chunks, args.repeats)
    text = markdown(result)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
