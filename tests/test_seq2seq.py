"""Seq2Seq: masking, attention kinds, decoding, overfitting, figures, train.py + translate end to end."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from torchmetrics.functional.text import bleu_score

from lightning_modules.nets.decoding import beam_search, greedy_decode
from lightning_modules.seq2seq import Seq2Seq, token_loss
from litlab.analysis.seq2seq_runs import main as figures_main
from litlab.analysis.seq2seq_runs import read_bleu_csv, read_curve_csv
from litlab.callbacks.seq2seq_figures import bleu_by_length, plot_bleu_by_length
from litlab.cli.translate import main as translate_main
from litlab.cli.translate import png_paths
from litlab.files import write_csv
from litlab.plotting import plot_attention, save_figure
from litlab.text import EOS, PAD, SPECIALS, Vocab, pad
from tests.conftest import ROOT, run_python, train_tiny_seq2seq

KINDS = ["bahdanau", "dot", "none"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (and the CI machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PAIRS = [  # French -> English, tutorial style
    ("je suis plus grand que mes amis .", "i m taller than my friends ."),
    ("il a peur de mourir .", "he is afraid of dying ."),
    ("elle a cinq ans de moins que moi .", "she is five years younger than me ."),
    ("nous sommes tres heureux .", "we are very happy ."),
    ("vous etes en retard .", "you are late ."),
    ("ils sont mes amis .", "they are my friends ."),
]
SRC_VOCAB = Vocab.by_frequency(fr for fr, _ in PAIRS)
TGT_VOCAB = Vocab.by_frequency(en for _, en in PAIRS)


def make_model(attention: str = "bahdanau", bidirectional: bool = True, hidden: int = 32,
               append_eos: bool = True, dropout: float = 0.0, tie_weights: bool = False,
               decoder_embed: int | None = None, **kwargs) -> Seq2Seq:  # fmt: skip
    return Seq2Seq(
        encoder={"_target_": "lightning_modules.nets.seq2seq.Encoder", "embed_dim": hidden,
                 "bidirectional": bidirectional, "dropout": dropout},
        decoder={"_target_": "lightning_modules.nets.seq2seq.Decoder",
                 "embed_dim": decoder_embed or hidden, "dropout": dropout,
                 "tie_weights": tie_weights},
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-2},
        src_vocab=SRC_VOCAB.words, tgt_vocab=TGT_VOCAB.words, hidden_dim=hidden, attention=attention,
        preprocessing={"append_eos": append_eos, "keep_period": True, "max_length": 10},
        **kwargs,
    )  # fmt: skip


def make_batch(append_eos: bool = True, extra_pad: int = 0) -> tuple[torch.Tensor, ...]:
    src = [SRC_VOCAB.encode(fr.split(), append_eos) for fr, _ in PAIRS]
    tgt = [TGT_VOCAB.encode(en.split(), append_eos) for _, en in PAIRS]
    src_ids, src_mask = pad(src, max(map(len, src)) + extra_pad)
    tgt_ids, tgt_mask = pad(tgt, max(map(len, tgt)) + extra_pad)
    return src_ids, src_mask, tgt_ids, tgt_mask


@pytest.mark.parametrize("attention", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_the_loss(attention: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    model = make_model(attention, bidirectional).eval()
    src, src_mask, tgt, tgt_mask = make_batch()
    src2, src_mask2, tgt2, tgt_mask2 = make_batch(extra_pad=4)
    assert src2.shape[1] == src.shape[1] + 4
    with torch.no_grad():
        logits, _ = model(src, src_mask, tgt)
        logits2, _ = model(src2, src_mask2, tgt2)
    loss = token_loss(logits, tgt, tgt_mask)
    torch.testing.assert_close(token_loss(logits2, tgt2, tgt_mask2), loss)
    torch.testing.assert_close(logits2[:, : tgt.shape[1]], logits)
    # the tutorial's unmasked loss does depend on padding (why the default masks it)
    assert not torch.isclose(token_loss(logits2, tgt2, tgt_mask2, masked=False), loss)


@pytest.mark.parametrize("attention", KINDS)
def test_each_attention_kind_trains(attention: str) -> None:
    torch.manual_seed(0)
    model = make_model(attention, dropout=0.1)
    src, src_mask, tgt, tgt_mask = make_batch()
    logits, weights = model(src, src_mask, tgt, teacher_forcing_ratio=0.5)
    assert logits.shape == (len(PAIRS), tgt.shape[1], len(TGT_VOCAB))
    assert (weights is None) == (attention == "none")
    token_loss(logits, tgt, tgt_mask, label_smoothing=0.1).backward()
    for name, param in model.named_parameters():
        if attention == "none" and name.startswith("encoder.memory_proj"):
            continue  # without attention the decoder never reads the memory
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_tied_decoder_shares_one_matrix() -> None:
    """``tie_weights``: W_o is the embedding matrix (one tensor, V x H fewer parameters), at the
    output layer's scale with a zero ``<pad>`` row; it trains; a state dict round-trips."""
    torch.manual_seed(0)
    tied, untied = make_model(tie_weights=True), make_model()
    decoder = tied.decoder
    assert decoder.out.weight is decoder.embedding.weight
    n_params = sum(p.numel() for p in tied.parameters())
    assert n_params == sum(p.numel() for p in untied.parameters()) - len(TGT_VOCAB) * 32
    assert decoder.embedding.weight.abs().max() <= 32**-0.5
    assert decoder.embedding.weight[PAD].abs().sum() == 0
    src, src_mask, tgt, tgt_mask = make_batch()
    token_loss(tied(src, src_mask, tgt)[0], tgt, tgt_mask).backward()
    assert torch.isfinite(decoder.out.weight.grad).all() and decoder.out.weight.grad.abs().sum() > 0
    copy = make_model(tie_weights=True)
    copy.load_state_dict(tied.state_dict())
    assert copy.decoder.out.weight is copy.decoder.embedding.weight
    tied.eval(), copy.eval()
    torch.testing.assert_close(copy(src, src_mask, tgt)[0], tied(src, src_mask, tgt)[0])


def test_tied_decoder_needs_matching_sizes() -> None:
    with pytest.raises(ValueError, match=r"needs embed_dim \(16\) == hidden_dim \(32\)"):
        make_model(tie_weights=True, decoder_embed=16)


@pytest.mark.parametrize("attention", ["bahdanau", "dot"])
def test_attention_rows_sum_to_one_on_real_tokens(attention: str) -> None:
    torch.manual_seed(0)
    model = make_model(attention).eval()
    src, src_mask, tgt, _ = make_batch(extra_pad=3)
    with torch.no_grad():
        _, weights = model(src, src_mask, tgt)
        _, greedy_weights = model.decode(src, src_mask, beam_size=1)
    for w in (weights, greedy_weights):
        mask = src_mask.unsqueeze(1).expand_as(w)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]))
        assert (w[~mask] == 0).all()
        assert (w[mask] > 0).all()


@pytest.mark.parametrize("attention", KINDS)
def test_beam_size_one_equals_greedy(attention: str) -> None:
    torch.manual_seed(1)
    model = make_model(attention, bidirectional=attention != "dot").eval()
    src, src_mask, _, _ = make_batch(extra_pad=2)
    nets = model.encoder, model.decoder
    greedy, greedy_attn = greedy_decode(*nets, src, src_mask, max_length=8)
    beam, beam_attn = beam_search(*nets, src, src_mask, beam_size=1, max_length=8)
    assert torch.equal(greedy, beam)
    if attention != "none":
        torch.testing.assert_close(greedy_attn, beam_attn)
    wide, _ = beam_search(*nets, src, src_mask, beam_size=4, max_length=8)
    assert wide.shape[0] == src.shape[0]


def test_teacher_forcing_ratio_zero_ignores_reference_inputs() -> None:
    torch.manual_seed(0)
    model = make_model().eval()
    src, src_mask, tgt, _ = make_batch()
    other = tgt.clone()
    other[:, :-1] = torch.randint(len(SPECIALS), len(TGT_VOCAB), other[:, :-1].shape)
    with torch.no_grad():
        free, _ = model(src, src_mask, tgt, teacher_forcing_ratio=0.0)
        free_other, _ = model(src, src_mask, other, teacher_forcing_ratio=0.0)
        forced, _ = model(src, src_mask, tgt, teacher_forcing_ratio=1.0)
        forced_other, _ = model(src, src_mask, other, teacher_forcing_ratio=1.0)
    torch.testing.assert_close(free, free_other)
    assert not torch.allclose(forced[:, 1:], forced_other[:, 1:])
    torch.testing.assert_close(forced[:, 0], free[:, 0])


def overfit(model: Seq2Seq, append_eos: bool, steps: int = 70) -> None:
    src, src_mask, tgt, tgt_mask = make_batch(append_eos)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        logits, _ = model(src, src_mask, tgt)
        token_loss(logits, tgt, tgt_mask).backward()
        optimizer.step()
    model.eval()


def test_tiny_model_overfits_to_bleu_one() -> None:
    torch.manual_seed(0)
    model = make_model(hidden=48)
    overfit(model, append_eos=True)
    src, src_mask, _, _ = make_batch()
    refs = [[en] for _, en in PAIRS]
    for beam_size in (1, 3):
        hyps = [" ".join(w) for w in model.to_words(model.decode(src, src_mask, beam_size)[0])]
        assert float(bleu_score(hyps, refs, n_gram=4)) == pytest.approx(1.0), hyps
    results = model.translate([fr for fr, _ in PAIRS])
    assert [r.text for r in results] == [en for _, en in PAIRS]
    assert all(r.output_labels[-1] == "<eos>" and r.source_labels[-1] == "<eos>" for r in results)


def test_without_eos_the_decoder_runs_to_max_length() -> None:
    torch.manual_seed(0)
    model = make_model(hidden=48, append_eos=False, max_decode_length=10)
    overfit(model, append_eos=False, steps=60)
    src, src_mask, _, _ = make_batch(append_eos=False)
    tokens, _ = model.decode(src, src_mask, beam_size=1)
    assert tokens.shape[1] == 10 and not (tokens == EOS).any() and not (tokens == PAD).any()
    results = model.translate([fr for fr, _ in PAIRS[:2]])
    assert all(len(r.words) == 10 for r in results)
    assert results[0].words[:6] == ["i", "m", "taller", "than", "my", "friends"]


def test_translate_unknown_empty_and_garbage() -> None:
    torch.manual_seed(0)
    model = make_model().eval()
    results = model.translate(
        ["je suis zorglub .", "", "1234 ???", "\x00\ufffd\ufffd", "amis " * 500]
    )
    assert results[0].unknown == ["zorglub"] and results[0].words
    assert results[0].attention.shape == (len(results[0].output_labels), 5)  # 4 words + <eos>
    assert results[1].words == [] and results[1].attention is None
    assert results[2].source == ["?", "?", "?"]  # punctuation only: still translated
    assert results[3].words == []
    assert len(results[4].source) == 100  # truncated, not a crash


def test_bleu_by_length_and_figures(tmp_path: Path) -> None:
    records = [(3, "a b c d", "a b c d"), (3, "a b c d", "a b c e"), (5, "x y z w v", "q r s t u")]
    rows = bleu_by_length(records)
    assert [(n, c) for n, c, _ in rows] == [(3, 2), (5, 1)]
    assert 0 < rows[0][2] < 1 and rows[1][2] == 0
    write_csv(tmp_path / "figures" / "bleu_by_length.csv", ["src_len", "count", "bleu"], rows)
    xs, ys = read_bleu_csv(tmp_path / "figures" / "bleu_by_length.csv")
    assert xs == [3.0, 5.0]
    save_figure(plot_bleu_by_length({"bahdanau": (xs, ys), "none": (xs, [0.1, 0.0])}),
                tmp_path / "bleu.png")  # fmt: skip
    weights = torch.softmax(torch.randn(4, 5), dim=-1)
    save_figure(plot_attention(weights, list("abcde"), list("wxyz"), "t"), tmp_path / "attn.png")
    assert (tmp_path / "bleu.png").stat().st_size > 1000
    assert (tmp_path / "attn.png").stat().st_size > 1000
    assert png_paths(tmp_path / "a.png", 2) == [tmp_path / "a_1.png", tmp_path / "a_2.png"]
    # the comparison command reads run folders (figures/*.csv written by the callbacks)
    write_csv(tmp_path / "figures" / "bleu_curves.csv", ["metric", "epoch", "value"],
              [("val/bleu", 1, 0.1), ("val/bleu", 2, 0.2), ("val/loss", 1, 3.0)])  # fmt: skip
    assert read_curve_csv(tmp_path / "figures" / "bleu_curves.csv", "val/bleu") == (
        [1, 2],
        [0.1, 0.2],
    )
    for kind in ("length", "curves"):
        figures_main([kind, str(tmp_path / f"{kind}.png"), f"a={tmp_path}", f"b={tmp_path}"])
        assert (tmp_path / f"{kind}.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("experiment", "key"),
    [
        ("seq2seq_eos", "data.append_eos"),
        ("seq2seq_attention", "model.attention"),
        ("seq2seq_teacher_forcing", "model.teacher_forcing_ratio"),
    ],
)
def test_study_configs_compose(make_cfg, experiment: str, key: str) -> None:
    cfg = make_cfg(f"experiment={experiment}")
    assert cfg.model._target_ == "lightning_modules.seq2seq.Seq2Seq"
    assert cfg.data._target_ == "datamodules.eng_fra.EngFraDataModule"
    assert cfg.optimized_metric == "val/bleu"
    assert cfg.test_ckpt == "last" and cfg.trainer.precision == "bf16-mixed"  # the default's
    text = (ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()
    assert "mode: MULTIRUN" in text and key in text


@pytest.mark.parametrize(
    "experiment", ["seq2seq_eos", "seq2seq_attention", "seq2seq_teacher_forcing"]
)
def test_study_sweep_dir_resolves_before_hydra_starts(experiment: str, tmp_path: Path) -> None:
    """The basic sweeper resolves hydra.sweep.dir before any ``${hydra:...}`` value exists
    (resolving it creates the folder: ``fresh_dir``, so it goes under ``tmp_path``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = [f"experiment={experiment}", f"paths.log_dir={tmp_path}/logs"]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    saved, HydraConfig.instance().cfg = HydraConfig.instance().cfg, None
    try:
        sweep_dir = cfg.hydra.sweep.dir
    finally:
        HydraConfig.instance().cfg = saved
    assert Path(sweep_dir).as_posix().startswith(f"{tmp_path}/logs/{experiment}/multiruns/")
    assert cfg.hydra.mode.name == "MULTIRUN"


def test_tutorial_baseline_config(make_cfg) -> None:
    cfg = make_cfg("model=seq2seq_tutorial", tiny=False)
    assert cfg.model.hidden_dim == 128 and cfg.data.batch_size == 32
    assert cfg.model.teacher_forcing_ratio == 1.0 and cfg.model.mask_loss is False
    assert cfg.model.beam_size == 1 and cfg.model.optimizer.lr == 1e-3
    assert cfg.model.encoder.bidirectional is False and cfg.data.pad_to == 10
    assert cfg.trainer.max_epochs == 80 and cfg.model.scheduler is None  # the tutorial's n_epochs


@pytest.fixture(scope="module")
def trained_run(seq2seq_run: Path) -> Path:
    return seq2seq_run


def test_train_subprocess_picks_eng_fra(trained_run: Path) -> None:
    config = (trained_run / "config.yaml").read_text()
    assert "datamodules.eng_fra.EngFraDataModule" in config
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    figures = trained_run / "figures"
    assert (figures / "attention_1_je_suis_plus_grand_que_mes_amis.png").is_file()
    assert (figures / "attention_2_il_a_peur_de_mourir.png").is_file()
    assert (figures / "bleu_by_length.png").is_file() and (figures / "bleu_curves.png").is_file()
    assert (trained_run / "test_translations.csv").is_file()
    metrics = (trained_run / "metrics.csv").read_text().splitlines()[0]
    for name in ("val/bleu", "test/bleu", "test/out_len", "test/ref_len", "train/loss"):
        assert name in metrics


def test_checkpoint_loads_with_weights_only(trained_run: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert isinstance(state["hyper_parameters"]["src_vocab"], list)
    model = Seq2Seq.load_from_checkpoint(ckpt, weights_only=True)
    assert model.translate(["il a peur de mourir ."])[0].source_labels[-1] == "<eos>"


@pytest.mark.slow  # a second interpreter start (~10 s CPU); the fast suite runs main() in-process
def test_translate_command(trained_run: Path, data_dir: Path, tmp_path: Path) -> None:
    """``python -m litlab.cli.translate <ckpt> ...`` as a real command."""
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    png = tmp_path / "attn.png"
    args = ["-m", "litlab.cli.translate", ckpt, "je suis plus grand que mes amis .",
            "il a peur de zorglub .", "--attention-png", str(png)]  # fmt: skip
    proc = run_python(args, data_dir, timeout=120, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].strip()
    assert "zorglub" in proc.stderr
    assert (tmp_path / "attn_1.png").is_file() and (tmp_path / "attn_2.png").is_file()


def test_translate_main(trained_run: Path, tmp_path: Path, capsys) -> None:
    """The translate command in-process: a sentence per input, UNK noted, attention PNGs."""
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    png = tmp_path / "attn.png"
    args = [ckpt, "je suis plus grand que mes amis .", "il a peur de zorglub ."]
    assert translate_main([*args, "--attention-png", str(png), "--beam-size", "3"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].strip() and lines[1].strip()
    assert "zorglub" in err
    assert (tmp_path / "attn_1.png").is_file() and (tmp_path / "attn_2.png").is_file()


def test_translate_stdin(trained_run: Path, monkeypatch, capsys) -> None:
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    stdin = "il a peur de mourir .\nje suis très fatigué .\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert translate_main([ckpt]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].strip() and lines[1].strip()


@pytest.mark.slow  # two tiny training jobs in one multirun
def test_eos_study_runs_as_one_multirun(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = f"hydra.sweep.dir={tmp_path}"
    train_tiny_seq2seq("experiment=seq2seq_eos", sweep_dir, data_dir, train_batches=2, timeout=600)
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2
    values = []
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        values.append(OmegaConf.load(job / "config.yaml").data.append_eos)
    assert sorted(values) == [False, True]
