"""Translate French sentences into English with a trained Seq2Seq checkpoint.

    litlab translate <run>/checkpoints/last.ckpt "je suis plus grand que mes amis ."
    echo "il a peur de mourir ." | litlab translate <ckpt> --attention-png attn.png

(``litlab-translate`` and ``python -m litlab.cli.translate`` are the same command.) Options may
come anywhere on the line. One English line is printed per input sentence. Words outside the
training vocabulary are fed as ``<unk>`` and listed on stderr. Every input is checked before
anything is translated: no sentence at all (empty stdin), input that is not UTF-8 text, an empty
sentence, or one longer than ``--max-words`` ends the command with one ``error:`` line naming the
sentence, and exit status 1. ``--attention-png`` saves the attention heat-map (source words x
output words); with several sentences, ``name.png`` becomes ``name_1.png``, ``name_2.png``, ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from litlab.cli.common import CommandParser, add_device, check_output, positive_int, run_command
from litlab.errors import LitlabError


def png_paths(base: Path, count: int) -> list[Path]:
    """``base`` itself for one sentence, ``base_1.png`` ... for several."""
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}_{i}{base.suffix or '.png'}") for i in range(1, count + 1)]


class InputError(LitlabError, ValueError):
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


def build_parser(prog: str = "litlab translate") -> CommandParser:
    parser = CommandParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a Seq2Seq checkpoint (.ckpt) written by train.py")
    parser.add_argument("sentences", nargs="*", help="French sentences (default: lines of stdin)")
    parser.add_argument("--beam-size", type=positive_int, default=None,
                        help="beam width, 1 = greedy (default: the checkpoint's)")  # fmt: skip
    parser.add_argument("--attention-png", type=Path, default=None, help="save attention map(s)")
    parser.add_argument("--max-words", type=positive_int, default=100,
                        help="longest sentence accepted (default 100)")  # fmt: skip
    add_device(parser)
    return parser


def translate(args: argparse.Namespace, prog: str) -> None:
    if args.attention_png is not None:
        check_output(args.attention_png)
    sentences = list(args.sentences) if args.sentences else read_stdin_lines()
    if not sentences:
        raise InputError("no sentences: give them after the checkpoint, or one per line on stdin")
    check_sentences(sentences, args.max_words)

    from litlab.cli.loading import load_model  # heavy imports after the arguments are checked
    from litlab.plotting import plot_attention, save_figure

    model = load_model(args.checkpoint, "seq2seq", args.device, command="translate").model
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


def main(argv: Sequence[str] | None = None, prog: str = "litlab translate") -> int:
    """``litlab translate``; returns the exit status (0, or 1 after one ``error:`` line)."""
    return run_command(build_parser, translate, argv, prog)


if __name__ == "__main__":
    sys.exit(main(prog="python -m litlab.cli.translate"))
