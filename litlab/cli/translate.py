"""Translate French sentences into English with a trained Seq2Seq checkpoint.

    python -m litlab.cli.translate <run>/checkpoints/last.ckpt "je suis plus grand que mes amis ."
    echo "il a peur de mourir ." | python -m litlab.cli.translate <ckpt> --attention-png attn.png

One English line is printed per input sentence. Words outside the training vocabulary are fed as
``<unk>`` and listed on stderr. Every input is checked before anything is translated: input that
is not UTF-8 text, an empty sentence, or one longer than ``--max-words`` ends the command with one
``error:`` line naming the sentence, and exit status 1.
``--attention-png`` saves the attention heat-map (source words x output words); with several
sentences, ``name.png`` becomes ``name_1.png``, ``name_2.png``, ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def png_paths(base: Path, count: int) -> list[Path]:
    """``base`` itself for one sentence, ``base_1.png`` ... for several."""
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}_{i}{base.suffix or '.png'}") for i in range(1, count + 1)]


class InputError(ValueError):
    """Input the model cannot translate (not text, empty, too long)."""


def read_stdin_lines() -> list[str]:
    """Stdin as UTF-8 text lines; :class:`InputError` for bytes that are not text."""
    raw = sys.stdin.buffer.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"stdin is not UTF-8 text (byte {err.start}: {raw[err.start : err.start + 4]!r})"
        ) from None
    return text.splitlines()


def check_sentences(sentences: Sequence[str], max_words: int) -> None:
    """Refuse the whole input if one sentence is empty, too long, or holds control characters."""
    for number, sentence in enumerate(sentences, start=1):
        words = sentence.split()
        if not words:
            raise InputError(f"sentence {number} is empty")
        if len(words) > max_words:
            raise InputError(
                f"sentence {number} has {len(words)} words, more than --max-words={max_words} "
                "(the model was trained on sentences of fewer than 10 words)"
            )
        if any(ord(ch) < 32 and ch != "\t" for ch in sentence):
            raise InputError(f"sentence {number} holds control characters: binary input?")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m litlab.cli.translate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("checkpoint", help="a Seq2Seq checkpoint (.ckpt) written by train.py")
    parser.add_argument("sentences", nargs="*", help="French sentences (default: lines of stdin)")
    parser.add_argument("--beam-size", type=int, default=None, help="default: the checkpoint's")
    parser.add_argument("--attention-png", type=Path, default=None, help="save attention map(s)")
    parser.add_argument("--max-words", type=int, default=100, help="longest sentence accepted")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.beam_size is not None and args.beam_size < 1:
        parser.error(f"--beam-size must be >= 1, got {args.beam_size}")

    try:
        sentences = list(args.sentences) if args.sentences else read_stdin_lines()
        check_sentences(sentences, args.max_words)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not sentences:
        return 0

    from lightning_modules.seq2seq import Seq2Seq  # heavy imports after argument checks
    from litlab.checkpoints import load_checkpoint
    from litlab.errors import CheckpointError

    try:
        load_checkpoint(args.checkpoint)  # missing, corrupt or unsafe: refused unread
        model = Seq2Seq.load_from_checkpoint(
            args.checkpoint, map_location=args.device, weights_only=True
        )
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # readable, but not a Seq2Seq checkpoint
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(
            f"error: {args.checkpoint} is not a Seq2Seq checkpoint ({first_line})", file=sys.stderr
        )
        return 1
    from litlab.plotting import plot_attention, save_figure

    model.eval()
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
        save_figure(fig, paths[i])
        print(f"attention map: {paths[i]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
