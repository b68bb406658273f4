"""Continue a prompt with a trained Transformer language model (WikiText-2).

    litlab generate <lm ckpt> --prompt "the meaning of" --tokens 50 --temperature 0.8 --top-k 40

Words are WikiText-2's (whitespace-split, case-sensitive, ``<unk>`` for rare words); a prompt word
outside the vocabulary is fed as ``<unk>`` and named once on stderr; an empty prompt starts a new
line (``<eos>``). Each new word is drawn from softmax(logits / temperature) over the ``--top-k``
most probable words (all by default), given the last ``max_len`` words (the model's context);
``--temperature 0`` takes the most probable word. The text is printed with ``<eos>`` as a line
break. The checkpoint stores the vocabulary's size, not its words: they are rebuilt from
WikiText-2's training split in ``--data-dir``, as the run built them, and must number as many.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from litlab.cli.common import (
    CommandParser,
    add_data_dir,
    add_device,
    positive_int,
    run_command,
)
from litlab.errors import CheckpointError
from litlab.text import EOS_TOKEN, UNK_TOKEN, Vocab


def temperature(text: str) -> float:
    """An ``argparse`` type: a finite float >= 0."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser(prog: str = "litlab generate") -> CommandParser:
    parser = CommandParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkpoint", help="a Transformer LM checkpoint (.ckpt) written by train.py"
    )
    parser.add_argument("--prompt", default="", help="the words to continue (default: none)")
    parser.add_argument("--tokens", type=positive_int, default=50,
                        help="words to generate (default 50)")  # fmt: skip
    parser.add_argument("--temperature", type=temperature, default=1.0,
                        help="softmax temperature, 0 = most probable word (default 1)")  # fmt: skip
    parser.add_argument("--top-k", type=positive_int, default=None,
                        help="draw from the k most probable words only (default: all)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="seed of the draws")
    add_data_dir(parser, "the vocabulary (WikiText-2's training split)")
    add_device(parser)
    return parser


def generate(args: argparse.Namespace, prog: str) -> None:
    from lightning_modules.nets.decoding import sample_tokens
    from litlab.cli.loading import load_model

    loaded = load_model(args.checkpoint, "transformer_lm", args.device, command="generate")
    vocab = lm_vocabulary(loaded, args.data_dir)
    words = args.prompt.split() or [EOS_TOKEN]
    unknown = list(dict.fromkeys(w for w in words if w not in vocab))
    if unknown:
        print(f"note: not in the vocabulary, fed as {UNK_TOKEN}: {' '.join(unknown)}",
              file=sys.stderr)  # fmt: skip
    prompt = torch.tensor([vocab.encode(words)], device=loaded.device)
    generator = torch.Generator(device=loaded.device)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()
    model = loaded.model
    new = sample_tokens(model.net, prompt, args.tokens, model.hparams.max_len,
                        args.temperature, args.top_k, generator)  # fmt: skip
    print(as_text([*args.prompt.split(), *(vocab.words[i] for i in new[0].tolist())]))


def lm_vocabulary(loaded: object, data_dir: Path) -> Vocab:
    """The words of the LM's vocabulary: WikiText-2's training split in ``data_dir``, word types in
    order of first appearance (as the run's data module built them); refused unless there are as
    many as the checkpoint's ``vocab_size``."""
    from litlab.cli.loading import build_datamodule

    datamodule = build_datamodule(loaded.kind, loaded.checkpoint, data_dir, loaded.path)
    datamodule.setup("fit")
    expected = loaded.model.hparams.vocab_size
    if len(datamodule.vocab) != expected:
        raise CheckpointError(
            f"{loaded.path} was trained on a vocabulary of {expected} words, but WikiText-2's "
            f"training split in {datamodule.folder} gives {len(datamodule.vocab)}: give the "
            "--data-dir it was trained on"
        )
    return Vocab(datamodule.vocab)


def as_text(words: Sequence[str]) -> str:
    """Words joined by spaces, ``<eos>`` (the end of a WikiText-2 line) as a line break."""
    lines, line = [], []
    for word in words:
        if word == EOS_TOKEN:
            lines.append(" ".join(line))
            line = []
        else:
            line.append(word)
    return "\n".join([*lines, " ".join(line)]).strip("\n")


def main(argv: Sequence[str] | None = None, prog: str = "litlab generate") -> int:
    """``litlab generate``; returns the exit status (0, or 1 after one ``error:`` line)."""
    return run_command(build_parser, generate, argv, prog)
