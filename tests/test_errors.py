"""Bad input -> exit status 1, one short message naming the culprit, no traceback, nothing changed.

Each row of ``CASES`` is a command line (``train.py``, run in-process through its Hydra entry
point exactly as the shell runs it) and a broken input prepared in a temporary folder. With
``LITLAB_ERROR_TABLE=<file.md>`` the suite also writes the table of messages users see
(``results/reliability.md`` is made that way).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import train as train_script
from litlab.checkpoints import load_checkpoint
from litlab.cli.translate import main as translate_main
from tests.conftest import SEQ2SEQ_TINY, compose_config, write_message_table

TINY = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1", "callbacks.progress_bar.refresh_rate=0",
    "model.nll_num_samples=2", "model.naive_num_samples=2",
]  # fmt: skip
LM_TINY = [
    "model=transformer_lm", "model.d_model=16", "model.num_heads=2", "model.d_ff=32",
    "model.num_layers=1", "data.batch_size=4", "data.bptt=8", "trainer.max_epochs=1",
    "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
]  # fmt: skip
MESSAGES: list[tuple[str, str, str]] = []  # (case, command, what the user saw)


@dataclass
class Inputs:
    """What a case may use: a scratch folder, the real data, trained checkpoints."""

    tmp: Path
    data: Path
    vae_ckpt: Path
    seq2seq_ckpt: Path

    def mnist_copy(self) -> Path:
        """A writable copy of the real MNIST files; returns the new data dir."""
        shutil.copytree(self.data / "MNIST", self.tmp / "data" / "MNIST")
        return self.tmp / "data"

    def raw(self, name: str) -> Path:
        return self.tmp / "data" / "MNIST" / "raw" / name

    def wikitext_copy(self) -> Path:
        shutil.copytree(self.data / "wikitext-2", self.tmp / "data" / "wikitext-2")
        return self.tmp / "data"


def idx_gz(path: Path, magic: int, dims: tuple[int, ...]) -> None:
    """Write a gzip'd IDX file with the given header and zero data."""
    header = struct.pack(f">{1 + len(dims)}i", magic, *dims)
    size = 1
    for d in dims:
        size *= d
    path.write_bytes(gzip.compress(header + bytes(size)))


def data_missing(i: Inputs) -> list[str]:
    return [f"paths.data_dir={i.tmp / 'nowhere'}", "data.download=false"]


def one_mnist_file_missing(i: Inputs) -> list[str]:
    root = i.mnist_copy()
    i.raw("t10k-labels-idx1-ubyte.gz").unlink()
    return [f"paths.data_dir={root}", "data.download=false"]


def truncated_gz(i: Inputs) -> list[str]:
    root = i.mnist_copy()
    path = i.raw("train-images-idx3-ubyte.gz")
    path.write_bytes(path.read_bytes()[:100_000])
    return [f"paths.data_dir={root}"]


def wrong_magic(i: Inputs) -> list[str]:
    root = i.mnist_copy()
    idx_gz(i.raw("train-labels-idx1-ubyte.gz"), 2051, (60000,))
    return [f"paths.data_dir={root}"]


def wrong_shape(i: Inputs) -> list[str]:
    root = i.mnist_copy()
    idx_gz(i.raw("t10k-images-idx3-ubyte.gz"), 2051, (10000, 28, 27))
    return [f"paths.data_dir={root}"]


def eng_fra_all_malformed(i: Inputs) -> list[str]:
    folder = i.tmp / "data" / "eng-fra"
    folder.mkdir(parents=True)
    (folder / "eng-fra.txt").write_text("no tab here\nnor here\n\tonly one side\n")
    return ["model=seq2seq_attn", f"paths.data_dir={i.tmp / 'data'}", "data.sha256=null"]


def wikitext_empty(i: Inputs) -> list[str]:
    root = i.wikitext_copy()
    (root / "wikitext-2" / "valid.txt").write_bytes(b"")
    return [*LM_TINY, f"paths.data_dir={root}"]


def wikitext_not_utf8(i: Inputs) -> list[str]:
    root = i.wikitext_copy()
    (root / "wikitext-2" / "test.txt").write_bytes(b" = Valkyria = \n \xff\xfe\x00\x81 binary\n")
    return [*LM_TINY, f"paths.data_dir={root}"]


def corrupt_checkpoint(i: Inputs) -> list[str]:
    path = i.tmp / "corrupt.ckpt"
    path.write_bytes(i.vae_ckpt.read_bytes()[:5000])
    return [f"ckpt_path={path}"]


def checkpoint_of_another_model(i: Inputs) -> list[str]:
    return ["model=vae_cnn", f"ckpt_path={i.vae_ckpt}"]


def checkpoint_of_another_vocabulary(i: Inputs) -> list[str]:
    return ["model=seq2seq_attn", *SEQ2SEQ_TINY, "data.max_length=6", f"ckpt_path={i.seq2seq_ckpt}"]


class Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(i: Inputs) -> list[str]:
    checkpoint = load_checkpoint(i.vae_ckpt)
    checkpoint["hyper_parameters"]["note"] = Payload(i.tmp / "PAYLOAD_RAN")
    torch.save(checkpoint, i.tmp / "evil.ckpt")
    return [f"ckpt_path={i.tmp / 'evil.ckpt'}"]


def diverging_loss(i: Inputs) -> list[str]:
    return ["model.optimizer.lr=1e12", "callbacks.step_checkpoint.every_n_train_steps=1",
            "trainer.limit_train_batches=5"]  # fmt: skip


@dataclass
class Case:
    name: str
    make: Callable[[Inputs], list[str]]
    expected: tuple[str, ...]  # fragments the message must contain


CASES = [
    Case("unknown model option", lambda i: ["model=vae_nope"], ("model/vae_nope", "vae_cnn")),
    Case("unknown trainer key", lambda i: ["trainer.max_epoch=3"], ("max_epoch", "not in struct")),
    Case("value of the wrong type", lambda i: ["trainer.max_epochs=abc"],
         ("trainer.max_epochs='abc'", "expected int")),
    Case("wrong type, nested", lambda i: ["model.optimizer.lr=fast"],
         ("model.optimizer.lr='fast'", "expected float")),
    Case("missing required value", lambda i: ["data.batch_size=???"],
         ("required config value not set", "data.batch_size")),
    Case("data directory missing", data_missing, ("MNIST files not found", "nowhere", "DATA_DIR")),
    Case("one MNIST file missing", one_mnist_file_missing, ("t10k-labels-idx1-ubyte.gz",)),
    Case("truncated .gz", truncated_gz, ("train-images-idx3-ubyte.gz", "cannot decompress")),
    Case("IDX wrong magic number", wrong_magic,
         ("train-labels-idx1-ubyte.gz", "magic number 2051, expected 2049")),
    Case("IDX wrong shape", wrong_shape, ("t10k-images-idx3-ubyte.gz", "IDX shape (10000, 28, 27)")),
    Case("eng-fra.txt all malformed", eng_fra_all_malformed,
         ("eng-fra.txt", "no usable sentence pair", "2 malformed")),
    Case("WikiText file empty", wikitext_empty, ("valid.txt", "empty")),
    Case("WikiText file not UTF-8", wikitext_not_utf8, ("test.txt", "not UTF-8")),
    Case("corrupt checkpoint", corrupt_checkpoint, ("corrupt.ckpt", "not a readable checkpoint")),
    Case("checkpoint of another model", checkpoint_of_another_model, ("is from another model",)),
    Case("checkpoint of another vocabulary", checkpoint_of_another_vocabulary,
         ("trained with another src_vocab",)),
    Case("checkpoint with a pickle payload", malicious_checkpoint,
         ("evil.ckpt", "refused", "posix.system")),
    # the step-1 checkpoint's weights gave the NaN loss of step 2: it is not kept (issue 13.3)
    Case("loss becomes NaN", diverging_loss,
         ("loss became nan at step 2", "Last good checkpoint: none saved yet")),
]  # fmt: skip


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("vae_run")
    cfg = compose_config(["model=vae_mlp", *TINY, "test=false"], out, data_dir)
    train_script.train(cfg)
    return out / "checkpoints" / "last.ckpt"


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    """``python train.py <args>`` in this process: exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        train_script.main()
    return exit_info.value.code, capsys.readouterr().err


def user_message(stderr: str) -> str:
    """The lines a user reads, without Hydra's 'Error executing job' preamble and hint."""
    skip = ("Error executing job with overrides", "Set the environment variable HYDRA_FULL_ERROR")
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(skip)]
    return " ".join(line.strip() for line in lines)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_error(
    case: Case, tmp_path: Path, data_dir: Path, vae_ckpt: Path, seq2seq_run: Path,
    monkeypatch: pytest.MonkeyPatch, capsys,
) -> None:  # fmt: skip
    inputs = Inputs(tmp_path / "in", data_dir, vae_ckpt, seq2seq_run / "checkpoints" / "last.ckpt")
    inputs.tmp.mkdir()
    args = case.make(inputs)
    before = snapshot(inputs.tmp), snapshot(vae_ckpt.parent)
    run_dir = tmp_path / "run"
    code, stderr = run_cli(
        [*tiny_for(args), *args, f"hydra.run.dir={run_dir}"], monkeypatch, capsys
    )

    message = user_message(stderr)
    assert code == 1, stderr
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in stderr
    assert len(message) < 600, message
    assert (snapshot(inputs.tmp), snapshot(vae_ckpt.parent)) == before  # nothing overwritten
    assert not (inputs.tmp / "PAYLOAD_RAN").exists()
    if case.make is diverging_loss:  # no checkpoint of weights that gave a non-finite loss
        assert not list((run_dir / "checkpoints").glob("*.ckpt"))
    shared_tmp = str(tmp_path.parent)
    MESSAGES.append((case.name, " ".join(args).replace(shared_tmp, "<tmp>"),
                     message.replace(shared_tmp, "<tmp>")))  # fmt: skip


def tiny_for(args: list[str]) -> list[str]:
    """The tiny limits, minus the VAE-only keys when another model is chosen."""
    other_model = any(a.startswith("model=") and not a.startswith("model=vae") for a in args)
    return [t for t in TINY if not (other_model and t.startswith("model."))]


TRANSLATE_CASES = {
    "translate: empty line": ([""], b"", "sentence 1 is empty"),
    "translate: 10,000-word line": ([" ".join(["je"] * 10_000)], b"", "has 10000 words"),
    "translate: binary bytes on stdin": (
        [],
        b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
        "stdin is not UTF-8 text",
    ),
}


@pytest.mark.parametrize("name", list(TRANSLATE_CASES))
def test_translate_refuses_bad_input(
    name: str, seq2seq_run: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    sentences, stdin, expected = TRANSLATE_CASES[name]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    ckpt = str(seq2seq_run / "checkpoints" / "last.ckpt")
    assert translate_main([ckpt, *sentences]) == 1
    out, err = capsys.readouterr()
    assert out == "" and expected in err and "Traceback" not in err
    shown = " ".join(
        s if len(s) < 40 else f"'{s[:14]}...' ({len(s.split())} words)" for s in sentences
    )
    command = f"python -m litlab.cli.translate <ckpt> {shown}".strip()
    MESSAGES.append((name, command + (" < image.png" if stdin else ""), err.strip()))


def test_translate_refuses_unsafe_and_foreign_checkpoints(
    tmp_path: Path, vae_ckpt: Path, capsys
) -> None:
    assert translate_main([str(vae_ckpt), "bonjour ."]) == 1
    assert "is a VAE checkpoint; `litlab translate` needs a Seq2Seq" in capsys.readouterr().err
    assert translate_main([str(tmp_path / "missing.ckpt"), "bonjour ."]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.fixture(scope="module", autouse=True)
def write_error_table() -> None:
    """With ``LITLAB_ERROR_TABLE=<path>``, write the messages seen as a Markdown table."""
    yield
    header = [
        "bad input",
        "command (`python train.py` unless shown)",
        "what the user sees (stderr)",
    ]
    write_message_table("LITLAB_ERROR_TABLE", header, MESSAGES)
