"""A checkpoint's metrics on the test (or validation) split, without composing a Hydra run.

    litlab evaluate <ckpt> [--split test|val] [--data-dir D] [--device cpu|cuda] [--batch-size N]

The data module is the one of the model's kind (MNIST for a VAE, eng-fra for Seq2Seq, WikiText-2
for the Transformer LM), with the settings its run stored in the checkpoint (Lightning's
``datamodule_hyper_parameters``; the defaults when there are none) and ``--data-dir`` for its
folder. A data set that does not give the checkpoint's vocabulary is refused. The model's own
test (validation) step computes the metrics, on one device, with no logger, callback or file
written; they are printed one per line. Monte-Carlo metrics (the VAE's -ELBO with one latent
draw, its importance-sampled likelihood) depend on the random numbers: the global generator is
seeded as ``train.py`` seeds it, before the model is built, with the run's ``seed`` (its
``config.yaml`` beside ``checkpoints/``; else ``--seed``, default 12345 as ``conf/train.yaml``),
so the numbers are those of ``python train.py train=false ckpt_path=<ckpt>``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from litlab.cli.common import (
    CommandParser,
    add_data_dir,
    add_device,
    positive_int,
    quiet_lightning,
    run_command,
)

DEFAULT_SEED = 12345  # conf/train.yaml's seed


def build_parser(prog: str = "litlab evaluate") -> CommandParser:
    parser = CommandParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint (.ckpt) written by train.py, any model")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="the split to evaluate (default test)")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="evaluation batch size (default: the run's data.eval_batch_size)")  # fmt: skip
    parser.add_argument("--limit-batches", type=positive_int, default=None,
                        help="evaluate the first N batches only (default: the whole split)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of the Monte-Carlo estimates (default: the run's, else "
                             f"{DEFAULT_SEED})")  # fmt: skip
    add_data_dir(parser, "the split to evaluate")
    add_device(parser)
    return parser


def run_seed(checkpoint: Path) -> int | None:
    """The ``seed`` of the run whose ``checkpoints/`` folder holds ``checkpoint``, if any."""
    import yaml

    config = checkpoint.resolve().parent.parent / "config.yaml"
    if checkpoint.resolve().parent.name != "checkpoints" or not config.is_file():
        return None
    try:
        seed = (yaml.safe_load(config.read_text()) or {}).get("seed")
    except (yaml.YAMLError, OSError, AttributeError):
        return None
    return seed if isinstance(seed, int) else None


def evaluate(args: argparse.Namespace, prog: str) -> None:
    quiet_lightning()
    import lightning as L

    from litlab.checkpoints import check_checkpoint
    from litlab.cli.loading import build_datamodule, check_device, load_model, read_checkpoint

    device = check_device(args.device)
    kind, checkpoint = read_checkpoint(args.checkpoint)  # wrong, corrupt, non-finite: refused
    seed = args.seed if args.seed is not None else run_seed(Path(args.checkpoint))
    seed = DEFAULT_SEED if seed is None else seed
    # train.py's order: seed, then the data (prepared and set up), then the model
    L.seed_everything(seed, workers=True, verbose=False)
    overrides = {} if args.batch_size is None else {"eval_batch_size": args.batch_size}
    datamodule = build_datamodule(kind, checkpoint, args.data_dir, args.checkpoint, **overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loaded = load_model(args.checkpoint, kind, device)
    check_checkpoint(args.checkpoint, loaded.model, datamodule.model_kwargs())  # same vocabulary
    limit = args.limit_batches or 1.0
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=limit,
        limit_val_batches=limit,
        num_sanity_val_steps=0,
    )
    step = trainer.test if args.split == "test" else trainer.validate
    (metrics,) = step(loaded.model, datamodule=datamodule, verbose=False)
    width = max(map(len, metrics))
    for name, value in sorted(metrics.items()):
        print(f"{name:<{width}}  {float(value)!r}")


def main(argv: Sequence[str] | None = None, prog: str = "litlab evaluate") -> int:
    """``litlab evaluate``; returns the exit status (0, or 1 after one ``error:`` line)."""
    return run_command(build_parser, evaluate, argv, prog)
