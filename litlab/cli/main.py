"""``litlab``: use a trained model from the command line (``python train.py`` trains it).

    litlab sample    <vae ckpt> --n 64 --out grid.png [--seed S] [--interpolate | --manifold]
    litlab generate  <lm ckpt> --prompt "the meaning of" --tokens 50 [--temperature T] [--top-k K]
    litlab translate <seq2seq ckpt> "il a peur de mourir ." [--attention-png attn.png]
    litlab evaluate  <ckpt> [--split test|val] [--data-dir D] [--batch-size N]

Every command reads the checkpoint through litlab's safe loader (:mod:`litlab.cli.loading`), runs
on ``--device cpu`` (default) or ``cuda``, and ends any error with one ``error:`` line on stderr
and exit status 1. ``litlab <command> --help`` lists a command's options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from litlab.cli.common import UsageError

COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("litlab.cli.sample", "pictures from a VAE: prior samples, interpolation, manifold"),
    "generate": ("litlab.cli.generate", "continue a prompt with a Transformer LM"),
    "translate": ("litlab.cli.translate", "French -> English with a Seq2Seq model"),
    "evaluate": ("litlab.cli.evaluate", "a checkpoint's test (or val) metrics"),
}


def usage() -> str:
    lines = ["usage: litlab <command> <checkpoint> [options]", "", "commands:"]
    lines += [f"  {name:<10} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "litlab <command> --help: the command's options. Training: python train.py"]
    return "\n".join(lines)


def command(name: str) -> Callable[..., int]:
    """The ``main(argv, prog)`` of a command (imported on demand: each brings torch)."""
    if name not in COMMANDS:
        raise UsageError(f"litlab: unknown command {name!r}; commands: {', '.join(COMMANDS)}")
    return import_module(COMMANDS[name][0]).main


def main(argv: Sequence[str] | None = None) -> int:
    """``litlab <command> ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    try:
        if not argv:
            raise UsageError(f"litlab: give a command: {', '.join(COMMANDS)} (see litlab --help)")
        command_main = command(argv[0])
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return command_main(argv[1:], prog=f"litlab {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
