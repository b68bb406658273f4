"""Translate French sentences into English with a trained Seq2Seq checkpoint.

    python -m litlab.translate <run>/checkpoints/last.ckpt "je suis plus grand que mes amis ."
    echo "il a peur de mourir ." | python -m litlab.translate <ckpt> --attention-png attn.png

One English line is printed per input sentence (an empty line for an empty or letter-free input).
Words outside the training vocabulary are fed as ``<unk>`` and listed on stderr. Input is read as
bytes and decoded as UTF-8 with replacement, so binary garbage never crashes the command.
``--attention-png`` saves the attention heat-map (source words x output words); with several
sentences, ``name.png`` becomes ``name_1.png``, ``name_2.png``, ...
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def plot_attention(
    attention: torch.Tensor, source: Sequence[str], output: Sequence[str], title: str = ""
) -> Figure:
    """Heat-map of attention weights: one row per output token, one column per source token."""
    weights = attention.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(source), 1.0 + 0.45 * len(output)))
    image = ax.imshow(weights, cmap="bone", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), labels=list(source), rotation=60, ha="right")
    ax.set_yticks(range(len(output)), labels=list(output))
    ax.set_xlabel("source (French)")
    ax.set_ylabel("output (English)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def png_paths(base: Path, count: int) -> list[Path]:
    """``base`` itself for one sentence, ``base_1.png`` ... for several."""
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}_{i}{base.suffix or '.png'}") for i in range(1, count + 1)]


def read_stdin_lines() -> list[str]:
    """Stdin as text lines, whatever bytes it holds."""
    return sys.stdin.buffer.read().decode("utf-8", errors="replace").splitlines()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m litlab.translate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("checkpoint", help="a Seq2Seq checkpoint (.ckpt) written by train.py")
    parser.add_argument("sentences", nargs="*", help="French sentences (default: lines of stdin)")
    parser.add_argument("--beam-size", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--attention-png", type=Path, default=None, help="save attention map(s)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.beam_size is not None and args.beam_size < 1:
        parser.error(f"--beam-size must be >= 1, got {args.beam_size}")

    from lightning_modules.seq2seq import Seq2Seq  # heavy imports after argument checks

    if not os.path.isfile(args.checkpoint):
        print(f"error: checkpoint {args.checkpoint} not found", file=sys.stderr)
        return 1
    try:
        model = Seq2Seq.load_from_checkpoint(
            args.checkpoint, map_location=args.device, weights_only=True
        )
    except Exception as err:  # any unreadable / foreign checkpoint: one clear line
        print(
            f"error: cannot load {args.checkpoint} as a Seq2Seq checkpoint: {err}", file=sys.stderr
        )
        return 1
    model.eval()
    sentences = list(args.sentences) if args.sentences else read_stdin_lines()
    if not sentences:
        return 0
    results = model.translate(sentences, beam_size=args.beam_size)
    paths = png_paths(args.attention_png, len(results)) if args.attention_png else []
    for i, result in enumerate(results):
        print(result.text, flush=True)
        if result.unknown:
            print(f"note: unknown words fed as <unk>: {' '.join(result.unknown)}", file=sys.stderr)
        if not paths:
            continue
        if result.attention is None:
            why = "no source words" if not result.source else "this model has no attention"
            print(f"note: no attention map for sentence {i + 1} ({why})", file=sys.stderr)
            continue
        fig = plot_attention(result.attention, result.source_labels, result.output_labels,
                             title=f"{' '.join(result.source)} -> {result.text}")  # fmt: skip
        paths[i].parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(paths[i], format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        print(f"attention map: {paths[i]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
