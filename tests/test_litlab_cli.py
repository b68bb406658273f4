"""``litlab sample | generate | translate | evaluate`` on real tiny checkpoints (issue 15.1, 13.5).

The commands run in-process through ``litlab.cli.main.main`` (as the ``litlab`` script calls it);
two tests start the installed scripts as real processes. Every error must be one ``error:`` line
on stderr, exit status 1, and no file written.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torchvision.io import read_image

import train as train_script
from datamodules.wikitext2 import WikiText2DataModule
from lightning_modules.nets.decoding import sample_tokens
from lightning_modules.nets.transformer import Transformer, TransformerConfig
from lightning_modules.transformer_lm import TransformerLM
from litlab.builders import compose_config
from litlab.cli.generate import as_text
from litlab.cli.main import main as litlab
from litlab.cli.sample import side_by_side
from litlab.cli.translate import main as translate_main
from tests.conftest import ROOT, TINY, subprocess_env

FIXTURES = ROOT / "tests" / "fixtures"
VAE_TINY = ["model.z_dim=2", "model.nll_num_samples=10", "model.naive_num_samples=10",
            "data.eval_batch_size=200"]  # fmt: skip
LM_TINY = ["model=transformer_lm", "model.d_model=16", "model.num_heads=2", "model.d_ff=32",
           "model.num_layers=1", "model.max_len=24", "data.batch_size=4", "data.eval_batch_size=4",
           "data.bptt=16"]  # fmt: skip
GRID_TILE = 28 + 2  # make_grid's padding


def train_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, *overrides: str) -> Path:
    """A real tiny ``train(cfg)`` run; its folder."""
    out = tmp_path_factory.mktemp("run")
    try:
        train_script.train(compose_config([*TINY, *overrides], out, data_dir))
    finally:
        GlobalHydra.instance().clear()
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return train_run(tmp_path_factory, data_dir, *VAE_TINY)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return train_run(tmp_path_factory, data_dir, *LM_TINY, "model.scheduler.warmup_steps=2")


def ckpt(run: Path) -> str:
    return str(run / "checkpoints" / "last.ckpt")


def call(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``litlab <args>`` in-process: exit status, stdout, stderr."""
    status = litlab([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error(status: int, out: str, err: str, *expected: str) -> None:
    assert status == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err


# -- sample ------------------------------------------------------------------------------------
def test_sample_writes_means_and_binary_draws_reproducibly(
    vae_run: Path, tmp_path: Path, capsys
) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "sub" / "b.png", tmp_path / "c.png"
    status, out, _ = call(capsys, "sample", ckpt(vae_run), "--n", "10", "--out", a, "--seed", "7")
    assert status == 0 and "Bernoulli means (left half)" in out and "seed 7" in out
    assert call(capsys, "sample", "--seed", "7", "--n", "10", ckpt(vae_run), "--out", b)[0] == 0
    assert call(capsys, "sample", ckpt(vae_run), "--n", "10", "--out", c, "--seed", "8")[0] == 0
    assert a.read_bytes() == b.read_bytes()  # same seed, same picture
    assert a.read_bytes() != c.read_bytes()
    image = read_image(str(a))  # rows of 4 means | grey | 4 binary draws; 3 rows for 10 samples
    assert image.shape[1:] == (3 * GRID_TILE + 2, 9 * GRID_TILE + 2)
    right = image[0, 2:GRID_TILE, 5 * GRID_TILE + 2 : 6 * GRID_TILE]  # first binary draw
    assert set(right.unique().tolist()) <= {0, 255}


def test_side_by_side_layout() -> None:
    left, right = torch.zeros(5, 1, 2, 2), torch.ones(5, 1, 2, 2)
    images, nrow = side_by_side(left, right)
    assert nrow == 7 and len(images) == 2 * 7  # k = 3: 3 + grey + 3 per row, two rows
    assert images[4].eq(1).all() and images[3].eq(0.5).all() and images[9].eq(0.5).all()


def test_sample_interpolation_and_manifold(vae_run: Path, tmp_path: Path, capsys) -> None:
    interp, manifold = tmp_path / "interp.png", tmp_path / "manifold.png"
    status, out, _ = call(capsys, "sample", ckpt(vae_run), "--interpolate", "--digits", "3", "4",
                          "--steps", "6", "--out", interp)  # fmt: skip
    assert status == 0 and "test digits 3 and 4" in out
    assert read_image(str(interp)).shape[1:] == (GRID_TILE + 2, 8 * GRID_TILE + 2)
    status, out, _ = call(capsys, "sample", ckpt(vae_run), "--manifold", "--steps", "5",
                          "--out", manifold)  # fmt: skip
    assert status == 0 and "5 x 5" in out
    assert read_image(str(manifold)).shape[1:] == (5 * GRID_TILE + 2, 5 * GRID_TILE + 2)


def test_sample_refusals_write_nothing(vae_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.png"
    assert_one_error(*call(capsys, "sample", ckpt(vae_run), "--interpolate", "--digits", "0",
                           "10000", "--out", out), "--digits 10000", "0 to 9999")  # fmt: skip
    assert_one_error(*call(capsys, "sample", ckpt(vae_run), "--interpolate", "--manifold"),
                     "not allowed with argument")  # fmt: skip
    assert_one_error(*call(capsys, "sample", ckpt(vae_run), "--steps", "3", "--out", out),
                     "--steps goes with")  # fmt: skip
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_error(*call(capsys, "sample", ckpt(vae_run), "--out", blocker / "x.png"),
                     "is a file, not a folder")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# -- generate ----------------------------------------------------------------------------------
def test_generate_is_the_models_sampling(lm_run: Path, data_dir: Path, capsys) -> None:
    """Greedy (temperature 0) output equals sample_tokens on the model, unknown words said once."""
    prompt = "the meaning of zorglub qqq zorglub"
    status, out, err = call(capsys, "generate", ckpt(lm_run), "--prompt", prompt, "--tokens", "6",
                            "--temperature", "0")  # fmt: skip
    assert status == 0
    assert err == "note: not in the vocabulary, fed as <unk>: zorglub qqq\n"
    model = TransformerLM.load_from_checkpoint(ckpt(lm_run)).eval()
    data = WikiText2DataModule(data_dir=str(data_dir), download=False)
    data.setup()
    index = {w: i for i, w in enumerate(data.vocab)}
    ids = torch.tensor([[index.get(w, index["<unk>"]) for w in prompt.split()]])
    new = sample_tokens(model.net, ids, 6, max_context=24, temperature=0)
    assert out == as_text([*prompt.split(), *(data.vocab[i] for i in new[0])]) + "\n"


def test_generate_seed_and_top_k(lm_run: Path, capsys) -> None:
    args = ["generate", ckpt(lm_run), "--prompt", "the meaning of", "--tokens", "8", "--top-k",
            "5", "--temperature", "0.7"]  # fmt: skip
    first = call(capsys, *args, "--seed", "1")
    assert first[0] == 0 and first[1].startswith("the meaning of ") and first[2] == ""
    assert call(capsys, *args, "--seed", "1") == first


def test_generate_needs_the_training_vocabulary(data_dir: Path, capsys) -> None:
    """The fixture LM has 50 words: WikiText-2's training split gives 33,278."""
    assert_one_error(*call(capsys, "generate", FIXTURES / "transformer_lm.ckpt", "--data-dir",
                           data_dir), "vocabulary of 50 words", "gives 33278")  # fmt: skip


def test_generate_refuses_bad_values(lm_run: Path, capsys) -> None:
    assert_one_error(*call(capsys, "generate", ckpt(lm_run), "--temperature", "-1"), "must be")
    assert_one_error(*call(capsys, "generate", ckpt(lm_run), "--top-k", "0"), "--top-k")
    assert_one_error(*call(capsys, "generate", ckpt(lm_run), "--tokens", "many"), "--tokens")


def test_sample_tokens() -> None:
    """Temperature 0 = top-1; a prompt longer than the context is cut to its end; seeded draws."""
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=30, d_model=8, num_heads=2, d_ff=8, max_len=4)
    lm = Transformer(config).eval()
    prompt = torch.randint(0, 30, (2, 9))
    greedy = sample_tokens(lm, prompt, 5, max_context=4, temperature=0)
    assert greedy.shape == (2, 5) and torch.equal(greedy, sample_tokens(lm, prompt, 5, 4, top_k=1))
    assert torch.equal(greedy, sample_tokens(lm, prompt[:, -4:], 5, 4, temperature=0))
    draws = [sample_tokens(lm, prompt, 6, 4, 1.5, 3, torch.Generator().manual_seed(5))
             for _ in range(2)]  # fmt: skip
    assert torch.equal(*draws)
    logits = lm(prompt[:, -4:])[:, -1]
    top3 = logits.topk(3).indices
    assert all(draws[0][b, 0] in top3[b] for b in range(2))


def test_as_text() -> None:
    assert as_text(["a", "b", "<eos>", "c"]) == "a b\nc"
    assert as_text(["<eos>", "a", "<eos>"]) == "a"


# -- translate (issue 13.5) --------------------------------------------------------------------
def test_translate_options_anywhere(seq2seq_run: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "attn.png"
    status, out, err = call(capsys, "translate", "--beam-size", "2", ckpt(seq2seq_run),
                            "il a peur de mourir .", "--attention-png", png,
                            "je suis zorglub .")  # fmt: skip
    assert status == 0 and len(out.splitlines()) == 2
    assert "zorglub" in err and (tmp_path / "attn_1.png").is_file()


def test_translate_faults_are_one_line(
    seq2seq_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    c = ckpt(seq2seq_run)
    assert_one_error(*call(capsys, "translate", c, "--nope", "bonjour ."), "--nope", "--help")
    assert_one_error(*call(capsys, "translate", c, "--beam-size", "0", "x ."), "must be >= 1")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert_one_error(*call(capsys, "translate", c), "no sentences")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_error(*call(capsys, "translate", c, "il a peur .", "--attention-png",
                           blocker / "x.png"), f"cannot write {blocker / 'x.png'}")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_translate_shortened_vocabulary(seq2seq_run: Path, tmp_path: Path, capsys) -> None:
    checkpoint = torch.load(ckpt(seq2seq_run), weights_only=True)
    checkpoint["hyper_parameters"]["tgt_vocab"] = checkpoint["hyper_parameters"]["tgt_vocab"][:-5]
    short = tmp_path / "short.ckpt"
    torch.save(checkpoint, short)
    status, out, err = call(capsys, "translate", short, "il a peur .")
    assert_one_error(status, out, err, "short.ckpt: its weights do not fit the Seq2Seq",
                     "size mismatch for decoder.embedding.weight", "vocabulary")  # fmt: skip
    assert "Error(s) in loading" not in err


def test_translate_script_and_alias(seq2seq_run: Path, data_dir: Path) -> None:
    """The installed scripts as real processes: ``litlab translate`` and ``litlab-translate``."""
    bin_dir = Path(sys.executable).parent
    env = subprocess_env(data_dir) | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([bin_dir / "litlab", "translate", "--beam-size", "1", ckpt(seq2seq_run),
                           "il a peur de mourir ."], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1, proc.stderr
    proc = subprocess.run([bin_dir / "litlab-translate", ckpt(seq2seq_run), "--bogus"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "error: litlab translate: unrecognized arguments: --bogus " \
                          "(see litlab translate --help)\n"  # fmt: skip


def test_translate_main_is_the_alias(seq2seq_run: Path, capsys) -> None:
    assert translate_main([ckpt(seq2seq_run), "--beam-size", "1", "il a peur ."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


# -- evaluate ----------------------------------------------------------------------------------
def parse_metrics(out: str) -> dict[str, float]:
    return {name: float(value) for name, value in (line.split() for line in out.splitlines())}


def test_evaluate_equals_train_py(
    vae_run: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The test metrics of a tiny VAE run: those train.py's test step reports for the checkpoint
    (``train=false ckpt_path=...``: same seed, same data, same batches), and nothing written."""
    cfg = compose_config([*TINY, *VAE_TINY, "train=false", f"ckpt_path={ckpt(vae_run)}"],
                         tmp_path / "eval_run", data_dir)  # fmt: skip
    try:
        expected = train_script.train(cfg)
    finally:
        GlobalHydra.instance().clear()
    capsys.readouterr()  # train.py's own report
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    status, out, err = call(capsys, "evaluate", ckpt(vae_run), "--data-dir", data_dir,
                            "--limit-batches", "1")  # fmt: skip
    assert status == 0, err
    metrics = parse_metrics(out)
    names = {"test/loss", "test/recon", "test/kl", "test/nll_is", "test/nll_naive"}
    assert set(metrics) == names
    assert metrics == {name: expected[name] for name in names}
    assert list(work.iterdir()) == []


def test_evaluate_every_model_and_split(
    vae_run: Path, lm_run: Path, seq2seq_run: Path, data_dir: Path, capsys
) -> None:
    status, out, _ = call(capsys, "evaluate", ckpt(lm_run), "--split", "val", "--limit-batches",
                          "2", "--batch-size", "8")  # fmt: skip
    metrics = parse_metrics(out)
    assert status == 0 and set(metrics) == {"val/loss", "val/ppl"}
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-4)
    status, out, _ = call(capsys, "evaluate", "--limit-batches", "1", ckpt(seq2seq_run))
    assert status == 0 and {"test/bleu", "test/loss"} <= set(parse_metrics(out))
    status, out, _ = call(capsys, "evaluate", ckpt(vae_run), "--split", "val", "--limit-batches",
                          "1")  # fmt: skip
    assert status == 0 and set(parse_metrics(out)) == {"val/loss", "val/recon", "val/kl"}


def test_evaluate_uses_the_stored_data_settings(seq2seq_run: Path, tmp_path: Path, capsys) -> None:
    """The data module is rebuilt from the checkpoint's datamodule_hyper_parameters: stored
    settings that give other vocabularies (shorter sentences) are refused, naming the difference."""
    checkpoint = torch.load(ckpt(seq2seq_run), weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["max_length"] == 10
    checkpoint["datamodule_hyper_parameters"]["max_length"] = 6
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    assert_one_error(*call(capsys, "evaluate", edited), "trained with another src_vocab")


# -- every command: the loader's refusals --------------------------------------------------------
COMMAND_ARGS = {
    "sample": [],
    "generate": ["--tokens", "2"],
    "translate": ["bonjour ."],
    "evaluate": [],
}
WRONG_KIND = {  # a checkpoint of another kind, and what the command needs
    "sample": ("transformer_lm.ckpt", "a Transformer LM checkpoint; `litlab sample` needs a VAE"),
    "generate": ("vae_mlp.ckpt", "a VAE checkpoint; `litlab generate` needs a Transformer LM"),
    "translate": ("vae_cnn.ckpt", "a VAE checkpoint; `litlab translate` needs a Seq2Seq"),
}


@pytest.mark.parametrize("command", list(WRONG_KIND))
def test_wrong_kind_of_checkpoint(command: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    name, expected = WRONG_KIND[command]
    status, out, err = call(capsys, command, FIXTURES / name, *COMMAND_ARGS[command])
    assert_one_error(status, out, err, f"{FIXTURES / name} is {expected} checkpoint")
    assert list(tmp_path.iterdir()) == []


def cuda_device_missing() -> str:
    """A CUDA device this machine lacks: ``cuda`` without CUDA, else one past the last GPU."""
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


@pytest.mark.parametrize("command", list(COMMAND_ARGS))
def test_missing_corrupt_nonfinite_and_device(
    command: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = COMMAND_ARGS[command]
    missing = tmp_path / "missing.ckpt"
    assert_one_error(*call(capsys, command, missing, *args), f"{missing}: no such file")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes((FIXTURES / "vae_mlp.ckpt").read_bytes()[:3000])
    assert_one_error(*call(capsys, command, corrupt, *args), "corrupt.ckpt: not a readable")
    kind = {"generate": "transformer_lm", "translate": "seq2seq_attn"}.get(command, "vae_mlp")
    checkpoint = torch.load(FIXTURES / f"{kind}.ckpt", weights_only=True)
    first = next(k for k, t in checkpoint["state_dict"].items() if t.is_floating_point())
    checkpoint["state_dict"][first].view(-1)[0] = float("nan")
    nan = tmp_path / "nan.ckpt"
    torch.save(checkpoint, nan)
    assert_one_error(*call(capsys, command, nan, *args), "weights are not finite", first)
    device = cuda_device_missing()
    status, out, err = call(capsys, command, FIXTURES / f"{kind}.ckpt", *args, "--device", device)
    assert_one_error(status, out, err, f"--device {device}")
    assert "checkpoint" not in err  # the device is named, not blamed on the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.ckpt", "nan.ckpt"]


def test_usage_errors(capsys) -> None:
    assert_one_error(*call(capsys), "give a command")
    assert_one_error(*call(capsys, "train"), "unknown command 'train'")
    assert call(capsys, "--help")[0] == 0
    with pytest.raises(SystemExit) as exit_info:
        litlab(["sample", "--help"])
    assert exit_info.value.code == 0
    assert "--interpolate" in capsys.readouterr().out


def test_checkpoint_that_is_no_litlab_model(tmp_path: Path, capsys) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}}, path)
    assert_one_error(*call(capsys, "evaluate", path), "holds no litlab model's hyperparameters")
    shutil.copy(FIXTURES / "vae_mlp.ckpt", tmp_path / "dir.ckpt")
    assert_one_error(*call(capsys, "sample", tmp_path), "a folder, not a checkpoint file")
