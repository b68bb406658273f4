"""The second table of bad inputs (issue 13): each gives one message naming the culprit, exit
status 1, no traceback, nothing written outside the run folder it was given.

Every row runs the real ``python train.py`` entry point (in this process, ``train.cli``) or the
real translate command. With ``LITLAB_ERROR_TABLE2=<file>`` the messages seen are written as the
Markdown table quoted in ``results/reliability.md``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import train as train_script
from litlab.cli.translate import main as translate_main
from tests.conftest import TINY, run_python, write_message_table
from tests.test_errors import user_message

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MESSAGES: list[tuple[str, str, str, str]] = []  # (group, input, command, message)


@dataclass
class Env:
    """Scratch paths for a case: ``tmp`` for inputs, ``run`` the run folder, the real data."""

    tmp: Path
    run: Path
    data: Path

    def data_copy(self, *subdirs: str) -> Path:
        """A data folder linking the real files of ``subdirs`` (copy-on-write by replacing)."""
        root = self.tmp / "data"
        for sub in subdirs:
            (root / sub).mkdir(parents=True, exist_ok=True)
            for f in (self.data / sub).iterdir():
                (root / sub / f.name).symlink_to(f)
        return root

    def replace(self, path: Path, content: bytes) -> None:
        path.unlink()
        path.write_bytes(content)


@dataclass
class Case:
    group: str
    name: str
    make: Callable[[Env], list[str]]
    expected: tuple[str, ...]


def args(*values: str) -> Callable[[Env], list[str]]:
    return lambda env: list(values)


def ranged(group: str, name: str, override: str, range_text: str, *extra: str) -> Case:
    key, _, value = override.partition("=")
    return Case(group, name, args(*extra, override), (f"{key.lstrip('+')}=", range_text))


LM = "model=transformer_lm"
S2S = "model=seq2seq_attn"

CONFIG = [
    # VAE
    ranged("VAE", "latent size 0", "model.z_dim=0", "must be >= 1"),
    ranged("VAE", "negative KL weight", "model.beta=-1", "must be >= 0"),
    ranged("VAE", "negative KL warm-up", "model.kl_warmup_steps=-5", "must be >= 0"),
    ranged("VAE", "negative K", "model.nll_num_samples=-1", "must be >= 0"),
    ranged("VAE", "chunk of 0 samples", "model.nll_chunk_size=0", "must be >= 1"),
    ranged("VAE", "strings as layer sizes", "model.encoder.hidden_dims=[a,b]", "item 0 ('a') expected int"),
    ranged("VAE", "a layer of width 0", "model.decoder.hidden_dims=[256,0]", "item 1 (0) must be >= 1"),
    ranged("VAE", "CNN channel 0", "model.encoder.channels=[16,0,64]", "item 1 (0) must be >= 1", "model=vae_cnn"),
    ranged("VAE", "CNN with two channel sizes", "model.encoder.channels=[16,32]", "expected a list of 3 items, got 2", "model=vae_cnn"),
    ranged("VAE", "deep CNN hidden 0", "model.decoder.hidden_dim=0", "must be >= 1", "model=vae_cnn_deep"),
    Case("VAE", "net size contradicts z_dim", args("model.encoder.z_dim=7"), ("z_dim",)),
    # Seq2Seq
    ranged("Seq2Seq", "hidden size 0", "model.hidden_dim=0", "must be >= 1", S2S),
    ranged("Seq2Seq", "teacher forcing 1.5", "model.teacher_forcing_ratio=1.5", ">= 0 and <= 1", S2S),
    ranged("Seq2Seq", "label smoothing 1", "model.label_smoothing=1.0", ">= 0 and < 1", S2S),
    ranged("Seq2Seq", "beam of 0", "model.beam_size=0", "must be >= 1", S2S),
    ranged("Seq2Seq", "unknown attention", "model.attention=luong", "one of 'bahdanau', 'dot', 'none'", S2S),
    ranged("Seq2Seq", "dropout 1", "model.encoder.dropout=1.0", ">= 0 and < 1", S2S),
    ranged("Seq2Seq", "negative length penalty", "model.length_penalty=-1", "must be >= 0", S2S),
    # Transformer LM
    ranged("LM", "0 layers", "model.num_layers=0", "must be >= 1", LM),
    ranged("LM", "width 0", "model.d_model=0", "must be >= 1", LM),
    ranged("LM", "negative dropout", "model.dropout=-0.1", ">= 0 and < 1", LM),
    ranged("LM", "unknown activation", "model.activation=tanh", "one of 'relu', 'gelu'", LM),
    ranged("LM", "negative warm-up", "model.scheduler.warmup_steps=-1", "must be >= 0", LM),
    ranged("LM", "unknown decay", "model.scheduler.decay=linear", "one of 'constant', 'inverse_sqrt', 'cosine'", LM),
    ranged("LM", "init range 0", "model.init_range=0", "must be > 0", LM),
    # a net refusing its arguments (a ValueError inside Hydra's instantiate): one line naming it
    Case("LM", "heads do not divide the width", args(LM, "model.d_model=15", "model.num_heads=2"),
         ("model: ValueError: d_model=15 is not divisible by num_heads=2",)),
    Case("LM", "DeepNorm scale with pre-LN", args(LM, "model.norm=pre", "model.residual_scale=2"),
         ("model: ValueError: residual_scale=2 applies to post-LN only (norm='pre')",)),
    Case("Seq2Seq", "tied decoder of another width",
         args(S2S, "model.decoder.tie_weights=true", "model.decoder.embed_dim=16"),
         ("model: ValueError: tie_weights=true", "needs embed_dim (16) == hidden_dim")),
    Case("LM", "context longer than the positional table", args(LM, "data.bptt=2048"),
         ("data.bptt=2048 is longer than model.max_len=1024",)),
    # optimisers, schedulers, trainer
    ranged("optimiser", "negative learning rate", "model.optimizer.lr=-1", "must be >= 0"),
    ranged("optimiser", "learning rate beyond float32", "model.optimizer.lr=1e39", "must be < 3.40282e+38"),
    ranged("optimiser", "negative weight decay", "model.optimizer.weight_decay=-0.1", "must be >= 0", LM),
    ranged("scheduler", "cosine of length 0", "model.scheduler.T_max=0", "must be >= 1", S2S),
    ranged("trainer", "max_epochs -2", "trainer.max_epochs=-2", "must be >= -1"),
    ranged("trainer", "accumulate 0 batches", "+trainer.accumulate_grad_batches=0", "must be >= 1"),
    ranged("trainer", "negative clipping", "trainer.gradient_clip_val=-1", "must be >= 0", LM),
    ranged("trainer", "log every 0 steps", "trainer.log_every_n_steps=0", "must be >= 1"),
    # data modules
    ranged("MNIST", "batch size 0", "data.batch_size=0", "must be >= 1"),
    ranged("MNIST", "eval batch size 0", "data.eval_batch_size=0", "must be >= 1"),
    ranged("MNIST", "validation of 60,000 images", "data.val_size=60000", ">= 1 and < 60000"),
    ranged("MNIST", "unknown binarisation", "data.binarize=soft", "one of 'dynamic', 'static', 'none'"),
    ranged("MNIST", "negative seed", "data.split_seed=-1", ">= 0"),
    ranged("eng-fra", "no validation share", "data.val_fraction=0", "> 0 and < 1", S2S),
    ranged("eng-fra", "min_freq 0", "data.min_freq=0", "must be >= 1", S2S),
    ranged("eng-fra", "max_length 1", "data.max_length=1", "must be >= 2", S2S),
    ranged("eng-fra", "bucket pools 0", "data.bucket_pools=0", "must be >= 1", S2S),
    ranged("WikiText-2", "bptt 0", "data.bptt=0", "must be >= 1", LM),
    ranged("WikiText-2", "eval stride 0", "data.eval_stride=0", "must be >= 1", LM),
    ranged("WikiText-2", "eval batch size 0", "data.eval_batch_size=0", "must be >= 1", LM),
    # callbacks
    ranged("callbacks", "NaN check every 0 steps", "callbacks.finite_loss.check_every_n_steps=0", "must be >= 1"),
    ranged("callbacks", "0 sample images", "callbacks.vae_figures.num_samples=0", "must be >= 1"),
    ranged("callbacks", "manifold of 1 step", "callbacks.vae_figures.manifold_steps=1", "must be >= 2"),
    ranged("callbacks", "gradient probe every 0 steps", "callbacks.grad_probe.every_n_steps=0", "must be >= 1", LM),
    ranged("callbacks", "negative step checkpoint interval", "callbacks.step_checkpoint.every_n_train_steps=-1", ">= 0"),
    ranged("callbacks", "negative progress refresh", "callbacks.progress_bar.refresh_rate=-1", ">= 0"),
    # combinations
    Case("config", "nothing to do", args("train=false", "test=false"), ("train=false test=false: nothing to do",)),
    Case("config", "unknown test checkpoint", args("test_ckpt=first"), ("test_ckpt='first': expected one of 'best', 'last'",)),
    Case("config", "negative seed", args("seed=-3"), ("seed=-3: must be >= 0",)),
    Case("config", "train=maybe", args("train=maybe"), ("train='maybe': expected bool",)),
    Case("config", "VAE on WikiText-2", args("data=wikitext2"), ("VAE and data", "do not fit", "vocab_size")),
    Case("config", "LM on MNIST", args(LM, "data=mnist"), ("data.bptt", "takes no argument 'bptt'", "do not fit")),
    Case("config", "Seq2Seq on MNIST", args(S2S, "data=mnist"), ("data.max_length", "do not fit")),
    Case("config", "VAE on eng-fra", args("data=eng_fra"), ("do not fit", "src_vocab")),
    Case("config", "evaluate without a checkpoint", args("train=false"), ("train=false evaluates a checkpoint",)),
]  # fmt: skip


def mnist_labels_short(env: Env) -> list[str]:
    data = env.data_copy("MNIST/raw")
    path = data / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    env.replace(path, gzip.compress(raw[:-1]))  # the header still says 10,000 labels
    return [f"paths.data_dir={data}"]


def mnist_noise(env: Env) -> list[str]:
    data = env.data_copy("MNIST/raw")
    env.replace(data / "MNIST/raw/train-labels-idx1-ubyte.gz", os.urandom(3000))
    return [f"paths.data_dir={data}"]


def eng_fra_corrupt_deflate(env: Env) -> list[str]:
    data = env.data_copy("eng-fra")
    path = data / "eng-fra/eng-fra.txt.gz"
    raw = bytearray(path.read_bytes())
    raw[5000:5040] = bytes(40)  # zeros inside the deflate stream
    env.replace(path, bytes(raw))
    return [S2S, f"paths.data_dir={data}"]


def eng_fra_tiny(env: Env) -> list[str]:
    folder = env.tmp / "data" / "eng-fra"
    folder.mkdir(parents=True)
    (folder / "eng-fra.txt").write_text("I am cold.\tJ'ai froid.\nHe is tall.\tIl est grand.\n")
    return [S2S, f"paths.data_dir={env.tmp / 'data'}", "data.sha256=null"]


def eng_fra_other_text(env: Env) -> list[str]:
    folder = env.tmp / "data" / "eng-fra"
    folder.mkdir(parents=True)
    (folder / "eng-fra.txt").write_text("I am cold.\tJ'ai froid.\n" * 50)
    return [S2S, f"paths.data_dir={env.tmp / 'data'}"]


def eng_fra_missing(env: Env) -> list[str]:
    return [S2S, f"paths.data_dir={env.tmp / 'nothing'}", "data.download=false"]


def wikitext_truncated(env: Env) -> list[str]:
    data = env.data_copy("wikitext-2")
    path = data / "wikitext-2/valid.txt"
    env.replace(path, path.read_bytes()[:-1000] if path.exists() else b"")
    return [LM, f"paths.data_dir={data}"]


def wikitext_missing(env: Env) -> list[str]:
    data = env.data_copy("wikitext-2")
    (data / "wikitext-2/test.txt").unlink()
    return [LM, f"paths.data_dir={data}", "data.download=false"]


DATA = [
    Case("data", "MNIST labels one short", mnist_labels_short, ("t10k-labels-idx1-ubyte.gz", "bytes after decompression")),
    Case("data", "MNIST file of noise", mnist_noise, ("train-labels-idx1-ubyte.gz", "cannot decompress")),
    Case("data", "eng-fra corrupt deflate stream", eng_fra_corrupt_deflate, ("eng-fra.txt.gz", "cannot decompress")),
    Case("data", "eng-fra too small to split", eng_fra_tiny, ("eng-fra.txt", "empty val and test split")),
    Case("data", "eng-fra another text", eng_fra_other_text, ("eng-fra.txt", "sha256")),
    Case("data", "eng-fra missing, offline", eng_fra_missing, ("eng-fra files not found", "data.download=false")),
    Case("data", "WikiText-2 file truncated", wikitext_truncated, ("valid.txt", "sha256")),
    Case("data", "WikiText-2 file missing, offline", wikitext_missing, ("WikiText-2 files not found", "test.txt")),
]  # fmt: skip


def vae_ckpt(env: Env) -> Path:
    return FIXTURES / "vae_mlp.ckpt"


FIXTURE_VAE = ["model.z_dim=2", "model.encoder.hidden_dims=[8]", "model.decoder.hidden_dims=[8]"]


def ckpt_missing(env: Env) -> list[str]:
    return ["train=false", f"ckpt_path={env.tmp / 'nope.ckpt'}"]


def ckpt_noise(env: Env) -> list[str]:
    (env.tmp / "noise.ckpt").write_bytes(os.urandom(5000))
    return ["train=false", f"ckpt_path={env.tmp / 'noise.ckpt'}"]


def ckpt_truncated(env: Env) -> list[str]:
    (env.tmp / "cut.ckpt").write_bytes(vae_ckpt(env).read_bytes()[:3000])
    return ["train=false", f"ckpt_path={env.tmp / 'cut.ckpt'}"]


def ckpt_weights_only(env: Env) -> list[str]:
    checkpoint = torch.load(vae_ckpt(env), weights_only=True)
    torch.save({"state_dict": checkpoint["state_dict"]}, env.tmp / "weights.ckpt")
    return [*FIXTURE_VAE, f"ckpt_path={env.tmp / 'weights.ckpt'}"]


def ckpt_nan(env: Env) -> list[str]:
    checkpoint = torch.load(vae_ckpt(env), weights_only=True)
    next(iter(checkpoint["state_dict"].values())).fill_(float("nan"))
    torch.save(checkpoint, env.tmp / "nan.ckpt")
    return [*FIXTURE_VAE, "train=false", f"ckpt_path={env.tmp / 'nan.ckpt'}"]


def ckpt_other_model(env: Env) -> list[str]:
    return [*FIXTURE_VAE, "train=false", f"ckpt_path={FIXTURES / 'vae_cnn.ckpt'}"]


def ckpt_other_size(env: Env) -> list[str]:
    return ["train=false", f"ckpt_path={vae_ckpt(env)}"]  # the default sizes, not the fixture's


def ckpt_last_none(env: Env) -> list[str]:
    return ["ckpt_path=last", f"paths.log_dir={env.tmp / 'empty_logs'}"]


CHECKPOINTS = [
    Case("checkpoint", "missing file", ckpt_missing, ("nope.ckpt: no such file",)),
    Case("checkpoint", "random bytes", ckpt_noise, ("noise.ckpt", "not a readable checkpoint")),
    Case("checkpoint", "truncated", ckpt_truncated, ("cut.ckpt", "not a readable checkpoint")),
    Case("checkpoint", "weights only, resumed", ckpt_weights_only, ("weights.ckpt holds weights only",)),
    Case("checkpoint", "NaN weights, evaluated", ckpt_nan, ("nan.ckpt: refused, its weights are not finite",)),
    Case("checkpoint", "another model", ckpt_other_model, ("vae_cnn.ckpt is from another model",)),
    Case("checkpoint", "another model size", ckpt_other_size, ("vae_mlp.ckpt is from another model", "missing")),
    Case("checkpoint", "ckpt_path=last, none there", ckpt_last_none, ("ckpt_path=last: no checkpoints/last.ckpt",)),
]  # fmt: skip


def run_dir_under_file(env: Env) -> list[str]:
    (env.tmp / "afile").write_text("x")
    return ["__RUN_DIR__", f"hydra.run.dir={env.tmp / 'afile' / 'run'}"]


def run_dir_taken(env: Env) -> list[str]:
    (env.tmp / "taken" / "checkpoints").mkdir(parents=True)
    (env.tmp / "taken" / "checkpoints" / "last.ckpt").write_bytes(b"theirs")
    return ["__RUN_DIR__", f"hydra.run.dir={env.tmp / 'taken'}"]


FOLDERS = [
    Case("output folder", "run folder under a file", run_dir_under_file, ("cannot create the folder", "is a file, not a folder")),
    Case("output folder", "run folder of another run", run_dir_taken, ("already holds another run (checkpoints)",)),
]  # fmt: skip

CASES = [*CONFIG, *DATA, *CHECKPOINTS, *FOLDERS]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def tiny_for(args: list[str]) -> list[str]:
    """The tiny trainer limits, plus the VAE-only keys when the VAE is the model."""
    vae = not any(a.startswith("model=") and "vae" not in a for a in args)
    vae_keys = ["model.nll_num_samples=2", "model.naive_num_samples=2"] if vae else []
    given = {a.split("=", 1)[0] for a in args}
    return [a for a in [*TINY, *vae_keys] if a.split("=", 1)[0] not in given]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.name}" for c in CASES])
def test_bad_input_gives_one_line(case: Case, tmp_path: Path, data_dir: Path, monkeypatch, capsys):
    env = Env(tmp_path / "in", tmp_path / "run", data_dir)
    env.tmp.mkdir()
    made = case.make(env)
    own_run_dir = "__RUN_DIR__" in made
    made = [a for a in made if a != "__RUN_DIR__"]
    run_args = [*tiny_for(made), *made] + ([] if own_run_dir else [f"hydra.run.dir={env.run}"])
    before = snapshot(env.tmp), snapshot(FIXTURES)
    monkeypatch.setattr(sys, "argv", ["train.py", *run_args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    with pytest.raises(SystemExit) as exit_info:
        train_script.cli()
    stderr = capsys.readouterr().err
    message = user_message(stderr)
    assert exit_info.value.code == 1, stderr
    assert "Traceback" not in stderr, stderr
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert len(message) < 700, message
    assert (snapshot(env.tmp), snapshot(FIXTURES)) == before  # nothing written or overwritten
    shown = " ".join(made).replace(str(tmp_path), "<tmp>").replace(str(FIXTURES), "<fixtures>")
    MESSAGES.append((case.group, case.name, shown,
                     message.replace(str(tmp_path), "<tmp>").replace(str(FIXTURES), "<fixtures>")))  # fmt: skip


def poisoned_seq2seq(tmp: Path, marker: Path) -> Path:
    checkpoint = torch.load(FIXTURES / "seq2seq_attn.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["decoder"]["dropout"] = {
        "_target_": "shutil.copy", "src": __file__, "dst": str(marker)
    }  # fmt: skip
    path = tmp / "evil.ckpt"
    torch.save(checkpoint, path)
    return path


def test_translate_refuses_a_checkpoint_that_would_run_code(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "copied.py"
    path = poisoned_seq2seq(tmp_path, marker)
    assert translate_main([str(path), "je suis grand ."]) == 1
    err = capsys.readouterr().err.strip()
    assert "decoder.dropout._target_='shutil.copy'" in err and "allow-list" in err
    assert not marker.exists() and err.count("\n") == 0
    MESSAGES.append(("checkpoint", "foreign _target_ (shutil.copy) in a checkpoint",
                     "litlab translate <tmp>/evil.ckpt 'je suis grand .'",
                     err.replace(str(tmp_path), "<tmp>")))  # fmt: skip


def test_failing_sweep_job_summary_keeps_the_reason(tmp_path: Path, data_dir: Path) -> None:
    """A multirun where one job's value is out of range: the other job runs; the summary line
    of the failed one says why (not Hydra's 'Error in call to target ...:' alone)."""
    cmd = ["train.py", "-m", *tiny_for([]), "model.z_dim=0,2", "model.encoder.hidden_dims=[8]",
           "model.decoder.hidden_dims=[8]", "test=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    proc = run_python(cmd, data_dir, timeout=300, OMP_NUM_THREADS="1")
    assert proc.returncode != 0
    summary = (tmp_path / "sweep" / "summary.csv").read_text()
    assert "COMPLETED" in summary and "FAILED" in summary
    assert "model.z_dim=0: must be >= 1" in summary
    line = next(row for row in summary.splitlines() if "FAILED" in row)
    MESSAGES.append(("sweep", "one job of two out of range",
                     "python train.py -m model.z_dim=0,2 ...", line.split(",")[-1].strip('"')))  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def write_table() -> None:
    """With ``LITLAB_ERROR_TABLE2=<path>``, write the messages seen as a Markdown table."""
    yield
    header = ["#", "what", "bad input", "arguments (`python train.py` unless shown)",
              "what the user sees"]  # fmt: skip
    numbered = [(str(n), *row) for n, row in enumerate(MESSAGES, start=1)]
    write_message_table("LITLAB_ERROR_TABLE2", header, numbered)


def test_the_table_covers_every_class() -> None:
    groups = {c.group for c in CASES}
    assert {"VAE", "Seq2Seq", "LM", "MNIST", "eng-fra", "WikiText-2", "callbacks", "trainer",
            "data", "checkpoint", "output folder"} <= groups  # fmt: skip
    assert len(CASES) + 2 >= 60
