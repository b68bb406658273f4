"""Transformer LM: causality, the three LayerNorm placements, the gradient probe, training end to end."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from datamodules.wikitext2 import WikiText2DataModule
from lightning_modules.base import build
from lightning_modules.nets.transformer import NORMS, Block, Transformer, TransformerConfig
from lightning_modules.schedules import WarmupSchedule
from lightning_modules.transformer_lm import TransformerLM, placement
from litlab.callbacks.grad_probe import grad_norms, mean_pairwise_cosine
from litlab.errors import ConfigError
from litlab.safety import is_allowed
from litlab.text import IGNORE_INDEX

TINY_ARCH = ["model.d_model=16", "model.num_heads=2", "model.d_ff=32", "model.num_layers=2"]
TINY_DATA = ["data.batch_size=4", "data.eval_batch_size=4", "data.bptt=16"]


def tiny_config(**overrides) -> TransformerConfig:
    fields = dict(vocab_size=50, d_model=16, num_heads=2, d_ff=24, num_layers=2, dropout=0.0)
    return TransformerConfig(**(fields | overrides))


# -- causality -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_no_future_token_leak(norm: str) -> None:
    torch.manual_seed(0)
    net = Transformer(tiny_config(norm=norm, num_layers=3)).eval()
    idx = torch.randint(0, 50, (2, 12))
    logits = net(idx)
    for t in range(idx.shape[1] - 1):
        changed = idx.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1 + torch.arange(2)) % 50
        new = net(changed)
        torch.testing.assert_close(new[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(new[:, t + 1], logits[:, t + 1])  # the test can see a change


# -- LayerNorm placement -----------------------------------------------------------------------
def reference_attention(block: Block, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + causal mask) V per head, then W^O, written out by hand."""
    attn, (B, T, C) = block.attn, x.shape
    h = attn.num_heads
    q, k, v = (x @ attn.c_attn.weight.T + attn.c_attn.bias).split(C, dim=2)
    q, k, v = (t.view(B, T, h, C // h).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // h)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return y @ attn.c_proj.weight.T + attn.c_proj.bias


def reference_mlp(block: Block, x: torch.Tensor) -> torch.Tensor:
    mlp = block.mlp
    return F.linear(
        F.relu(F.linear(x, mlp.c_fc.weight, mlp.c_fc.bias)), mlp.c_proj.weight, mlp.c_proj.bias
    )


def layer_norm(ln: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


@pytest.mark.parametrize("norm", NORMS)
def test_block_is_the_formula(norm: str) -> None:
    """post-LN: x = LN(x + F(x)); pre-LN: x = x + F(LN(x)); Peri-LN: x = x + LN_out(F(LN_in(x)))
    — the same weights, three placements."""
    torch.manual_seed(1)
    blocks = {n: Block(tiny_config(norm=n)).eval() for n in NORMS}
    peri = blocks["peri"]
    # random (non-default) LayerNorm affine parameters, so that they count in the comparison
    for ln in (peri.ln_1, peri.ln_2, peri.ln_1_out, peri.ln_2_out):
        torch.nn.init.normal_(ln.weight, 1.0, 0.3)
        torch.nn.init.normal_(ln.bias, 0.0, 0.3)
    shared = {k: v for k, v in peri.state_dict().items() if "_out." not in k}
    blocks["post"].load_state_dict(shared)  # same names and shapes: loads strictly
    blocks["pre"].load_state_dict(shared)
    block = blocks[norm]
    x = torch.randn(3, 7, 16)
    a, m = reference_attention, reference_mlp
    if norm == "post":
        h = layer_norm(block.ln_1, x + a(block, x))
        expected = layer_norm(block.ln_2, h + m(block, h))
    elif norm == "pre":
        h = x + a(block, layer_norm(block.ln_1, x))
        expected = h + m(block, layer_norm(block.ln_2, h))
    else:
        h = x + layer_norm(block.ln_1_out, a(block, layer_norm(block.ln_1, x)))
        expected = h + layer_norm(block.ln_2_out, m(block, layer_norm(block.ln_2, h)))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    for other in set(NORMS) - {norm}:  # the placements really differ
        assert not torch.allclose(blocks[other](x), expected, atol=1e-3), other


def test_residual_scale_is_deepnorm_for_post_ln_only() -> None:
    """residual_scale alpha: post-LN x = LN(alpha x + F(x)); refused for pre-LN and Peri-LN."""
    torch.manual_seed(2)
    block = Block(tiny_config(norm="post", residual_scale=2.0)).eval()
    x = torch.randn(2, 5, 16)
    h = layer_norm(block.ln_1, 2.0 * x + reference_attention(block, x))
    expected = layer_norm(block.ln_2, 2.0 * h + reference_mlp(block, h))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    plain = Block(tiny_config(norm="post")).eval()
    plain.load_state_dict(block.state_dict())  # the same parameters: alpha is not a weight
    assert not torch.allclose(plain(x), expected, atol=1e-3)
    with pytest.raises(ValueError, match=r"residual_scale=2.0 applies to post-LN only"):
        TransformerLM(vocab_size=50, optimizer={"_target_": "torch.optim.SGD", "lr": 1.0},
                      norm="pre", residual_scale=2.0)  # fmt: skip


def test_placements_share_parameter_shapes() -> None:
    nets = {n: Transformer(tiny_config(norm=n)) for n in NORMS}
    shapes = {n: {k: v.shape for k, v in net.state_dict().items()} for n, net in nets.items()}
    # identical except pre-LN's final LayerNorm (its residual stream is otherwise unnormalised)
    assert {k: v for k, v in shapes["pre"].items() if not k.startswith("ln_f.")} == shapes["post"]
    assert set(shapes["pre"]) - set(shapes["post"]) == {"ln_f.weight", "ln_f.bias"}
    assert isinstance(nets["post"].ln_f, torch.nn.Identity)
    # Peri-LN: pre-LN's parameters plus one output LayerNorm per sub-layer
    extra = {
        f"blocks.{i}.ln_{j}_out.{p}" for i in range(2) for j in (1, 2) for p in ("weight", "bias")
    }
    assert set(shapes["peri"]) - set(shapes["pre"]) == extra
    assert {k: v for k, v in shapes["peri"].items() if k not in extra} == shapes["pre"]


def test_norm_first_is_an_alias_of_norm(make_cfg) -> None:
    """model.norm_first=false|true (the older switch) selects post/pre; contradicting model.norm
    is one error; old checkpoints' hyperparameters (norm_first only) build the same placement."""
    assert [placement(None, nf) for nf in (None, False, True)] == ["post", "post", "pre"]
    assert placement("peri", None) == "peri" and placement("pre", True) == "pre"
    with pytest.raises(ConfigError, match="model.norm=peri and model.norm_first=true disagree"):
        placement("peri", True)
    arch = dict(vocab_size=50, d_model=16, num_heads=2, d_ff=24, num_layers=1,
                optimizer={"_target_": "torch.optim.SGD", "lr": 1.0})  # fmt: skip
    assert TransformerLM(norm_first=True, **arch).net.config.norm == "pre"
    assert TransformerLM(**arch).net.config.norm == "post"  # the old default, norm_first=False
    with pytest.raises(ConfigError, match="give model.norm alone"):
        TransformerLM(norm="post", norm_first=True, **arch)
    # the configs: model.norm's default, or what model.norm_first says
    expected = {
        ("model=transformer_lm",): ("pre", None),
        ("model=transformer_lm", "model.norm_first=false"): ("post", False),
        ("model=transformer_tutorial",): ("post", None),
        ("model=transformer_tutorial", "model.norm_first=true"): ("pre", True),
        ("experiment=ln_placement",): ("post", None),
        ("experiment=ln_placement", "model.norm_first=true"): ("pre", True),
        ("experiment=ln_placement", "model.norm=peri"): ("peri", None),
    }
    for overrides, (norm, norm_first) in expected.items():
        cfg = make_cfg(*overrides)
        assert (cfg.model.norm, cfg.model.norm_first) == (norm, norm_first), overrides


def test_embedding_is_scaled_with_sinusoidal_positions() -> None:
    net = Transformer(tiny_config()).eval()
    idx = torch.tensor([[3, 3, 3]])
    x = net.embed(idx)
    torch.testing.assert_close(x[0] - net.pe[:3], net.wte.weight[3].expand(3, -1) * 4.0)
    assert net.pe[0, 0] == 0 and net.pe[0, 1] == 1  # sin(0), cos(0)
    assert not torch.allclose(x[0, 0], x[0, 1])  # every position gets its own encoding
    tied = Transformer(tiny_config(tie_weights=True))
    assert tied.lm_head.weight is tied.wte.weight


# -- gradient norms at initialisation ----------------------------------------------------------
def embedding_grad_at_init(norm: str, num_layers: int, seeds=range(3)) -> float:
    """Mean over seeds of ||dL/dE|| at init on one fixed batch (dropout off)."""
    batch = torch.randint(0, 500, (8, 33), generator=torch.Generator().manual_seed(0))
    norms = []
    for seed in seeds:
        torch.manual_seed(seed)
        config = tiny_config(vocab_size=500, d_model=32, d_ff=32, norm=norm, num_layers=num_layers)
        net = Transformer(config)
        F.cross_entropy(net(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten()).backward()
        norms.append(net.wte.weight.grad.norm().item())
    return sum(norms) / len(norms)


def test_depth_changes_the_embedding_gradient_as_expected() -> None:
    """Post-LN: the embedding gradient shrinks with depth; pre-LN keeps it (report Q16).

    Measured at this size (3 seeds): post-LN 0.148 -> 0.105 from 1 to 8 layers, pre-LN 0.147 ->
    0.154; the thresholds leave room for that, and fail if the placements were swapped.
    """
    post1, post8 = embedding_grad_at_init("post", 1), embedding_grad_at_init("post", 8)
    pre1, pre8 = embedding_grad_at_init("pre", 1), embedding_grad_at_init("pre", 8)
    assert post8 < 0.85 * post1  # post-LN: every layer's LayerNorm Jacobian damps the gradient
    assert pre8 > 0.9 * pre1  # pre-LN: the identity residual path carries it undamped
    assert pre8 > 1.2 * post8
    assert pre8 / post8 > 1.2 * pre1 / post1


# -- the probe -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
def test_grad_probe_equals_direct_norms(norm: str, make_cfg, run_train, data_dir: Path) -> None:
    """Probe CSV = param.grad.norm() recomputed on the same batches with the same weights."""
    cfg = make_cfg(
        "model=transformer_lm", *TINY_ARCH, *TINY_DATA, "data.shuffle=false", "model.dropout=0",
        f"model.norm={norm}",
        # lr must be > 0; at 1e-30 the weights move by ~1e-30, so step 1 sees step 0's weights
        "model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=1e-30",
        "model.scheduler=null",
        "callbacks.grad_probe.init_batches=2", "callbacks.grad_probe.every_n_steps=1",
        "trainer.limit_train_batches=2", "test=false",
    )  # fmt: skip
    run_train(cfg)
    out = Path(cfg.paths.output_dir)
    with open(out / "grad_norms.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    recorded = {(r["phase"], int(r["step"]), r["name"], r["layer"]): float(r["norm"]) for r in rows}
    assert len(recorded) == 3 * (1 + 3 * 2)  # init, step 0, step 1 x (embedding + 3 per layer)

    model = TransformerLM.load_from_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert model.net.config.norm == norm
    dm = WikiText2DataModule(data_dir=str(data_dir), batch_size=4, bptt=16, shuffle=False)
    dm.setup()
    batches = [
        dm.on_after_batch_transfer(b, 0)
        for b, _ in zip(dm.train_dataloader(), range(2), strict=False)
    ]
    direct = []
    for batch in batches:
        model.zero_grad()
        model.loss(batch).backward()
        direct.append({n: p.grad.norm().item() for n, p in model.probe_parameters().items()})
    assert direct[0] != direct[1]
    for name in direct[0]:
        kind, _, layer = name.partition("/")
        for step in (0, 1):
            assert recorded[("train", step, kind, layer)] == pytest.approx(
                direct[step][name], rel=1e-5
            )
        mean = (direct[0][name] + direct[1][name]) / 2
        assert recorded[("init", 0, kind, layer)] == pytest.approx(mean, rel=1e-5)
    assert grad_norms(model.probe_parameters())["embedding"] == pytest.approx(
        direct[1]["embedding"]
    )
    # the forward signal of step 0's batch, recomputed layer by layer with explicit formulas
    with open(out / "signal.csv", newline="") as handle:
        signal = {(r["phase"], int(r["step"]), r["name"], int(r["layer"])): float(r["value"])
                  for r in csv.DictReader(handle)}  # fmt: skip
    assert len(signal) == 3 * 4 * 2  # init, step 0, step 1 x 4 quantities x 2 layers
    with torch.no_grad():
        x = model.net.embed(batches[0][0])
        for layer, block in enumerate(model.net.blocks):
            expected, x_out = direct_signal(block, norm, x)
            for name, value in expected.items():
                assert signal[("train", 0, name, layer)] == pytest.approx(value, rel=1e-4)
            x = x_out


def direct_signal(
    block: Block, norm: str, x: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """attn/mlp ratio, carry and token cosine of one block, by hand (dropout off)."""
    if norm == "post":
        attn = block.attn(x)
        mid = block.ln_1(x + attn)
        mlp = block.mlp(mid)
        out = block.ln_2(mid + mlp)
    else:
        attn = block.attn(block.ln_1(x))
        mid = x + (block.ln_1_out(attn) if norm == "peri" else attn)
        mlp = block.mlp(block.ln_2(mid))
        out = mid + (block.ln_2_out(mlp) if norm == "peri" else mlp)
    assert torch.allclose(out, block(x), atol=1e-6)
    scale = x.pow(2).mean().sqrt()
    pairs = []
    for seq in out:  # every pair of positions t != s
        length = seq.shape[0]
        cos = F.cosine_similarity(seq[:, None, :], seq[None, :, :], dim=-1)
        pairs.append((cos.sum() - cos.diagonal().sum()) / (length * (length - 1)))
    values = {
        "attn_ratio": attn.pow(2).mean().sqrt() / scale,
        "mlp_ratio": mlp.pow(2).mean().sqrt() / scale,
        "carry": F.cosine_similarity(x, out, dim=-1).mean(),
        "token_cos": torch.stack(pairs).mean(),
    }
    return {name: float(value) for name, value in values.items()}, out


def test_mean_pairwise_cosine_bounds() -> None:
    """1 for one vector repeated, 0 for orthogonal positions, -1/(T-1) at the most negative."""
    same = torch.ones(2, 5, 3)
    assert float(mean_pairwise_cosine(same)) == pytest.approx(1.0)
    assert float(mean_pairwise_cosine(torch.eye(4)[None])) == pytest.approx(0.0, abs=1e-7)
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    assert float(mean_pairwise_cosine(opposite)) == pytest.approx(-1.0)


# -- training end to end ---------------------------------------------------------------------
def test_init_range_reaches_the_embedding_and_output_weights() -> None:
    """``model.init_range`` r: embedding and (untied) output weights ~ U(-r, r)."""
    arch = dict(vocab_size=50, d_model=16, num_heads=2, d_ff=24, num_layers=1)
    for r in (0.1, 0.02):
        net = TransformerLM(optimizer={"_target_": "torch.optim.SGD", "lr": 1.0}, init_range=r,
                            **arch).net  # fmt: skip
        for weight in (net.wte.weight, net.lm_head.weight):
            assert weight.abs().max() <= r and weight.abs().max() > 0.9 * r


def test_model_picks_its_data_and_tutorial_config(make_cfg) -> None:
    cfg = make_cfg("model=transformer_tutorial")
    assert cfg.data._target_ == "datamodules.wikitext2.WikiText2DataModule"
    m = cfg.model
    assert (m.d_model, m.num_layers, m.num_heads, m.d_ff, m.dropout) == (200, 2, 2, 200, 0.2)
    assert m.optimizer._target_ == "torch.optim.SGD" and m.optimizer.lr == 5.0
    assert cfg.trainer.gradient_clip_val == 0.5 and m.norm == "post"
    assert make_cfg("model=transformer_tutorial", tiny=False).trainer.max_epochs == 3
    assert make_cfg("model=transformer_lm").callbacks.grad_probe._target_.endswith("GradProbe")


def test_token_loss_scores_only_unmasked_targets() -> None:
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    masked = targets.clone()
    masked[:, :3] = IGNORE_INDEX  # context-only positions of a sliding evaluation window
    expected = F.cross_entropy(logits[:, 3:].flatten(0, 1), targets[:, 3:].flatten())
    torch.testing.assert_close(TransformerLM.token_loss(logits, masked), expected)


def test_train_tiny_lm_end_to_end(make_cfg, run_train) -> None:
    """Real data, real train(cfg): finite, sane perplexity (no collapse: a leak would copy)."""
    cfg = make_cfg(
        "model=transformer_lm", *TINY_ARCH, *TINY_DATA, "model.optimizer.lr=3e-3",
        "model.scheduler.warmup_steps=5", "trainer.limit_train_batches=25",
        "trainer.limit_val_batches=5", "trainer.limit_test_batches=3", "data.eval_stride=8",
    )  # fmt: skip
    metrics = run_train(cfg)
    out = Path(cfg.paths.output_dir)
    for name in ("val/ppl", "test/ppl", "val/loss", "test/loss"):
        assert math.isfinite(metrics[name]), name
    # corpus perplexity (torchmetrics) = exp(token-weighted mean loss) over the same scored
    # targets (eval_stride=8: half of each window after the first is context only)
    assert metrics["test/ppl"] == pytest.approx(math.exp(metrics["test/loss"]), rel=1e-4)
    # 25 tiny steps reach ~15,000: better than uniform (33,278), far from a leak's collapse
    assert 50 < metrics["val/ppl"] < 33_278
    assert (out / "grad_norms.csv").is_file()
    assert (out / "figures" / "loss_curves.png").is_file()
    model = TransformerLM.load_from_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert model.hparams.vocab_size == 33_278 and model.net.config.num_layers == 2


def test_warmup_schedule() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = WarmupSchedule(opt, warmup_steps=4)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])
    cosine = WarmupSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                            warmup_steps=2, decay="cosine", total_steps=12)  # fmt: skip
    assert [cosine.factor(s) for s in (0, 1, 2, 7, 12)] == pytest.approx([0.5, 1, 1, 0.5, 0])
    assert WarmupSchedule(opt, 0).factor(0) == 1.0


def test_warmup_schedule_under_its_old_name() -> None:
    """Checkpoints written before the schedule moved name ``lightning_modules.transformer_lm``."""
    old = {"_target_": "lightning_modules.transformer_lm.WarmupSchedule", "warmup_steps": 2}
    assert is_allowed(old["_target_"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert isinstance(build(old, _partial_=True)(opt), WarmupSchedule)


def fit_tiny_lm(scheduler: dict, **trainer_args) -> tuple[L.Trainer, TransformerLM]:
    """A 2-layer LM fitted on random tokens (no data files) with the given scheduler config."""
    tokens = torch.randint(0, 50, (12, 9))
    loader = DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=2)
    model = TransformerLM(
        vocab_size=50, d_model=16, num_heads=2, d_ff=24, num_layers=2,
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3}, scheduler=scheduler,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **trainer_args,
    )  # fmt: skip
    trainer.fit(model, loader)
    return trainer, model


COSINE = {
    "_target_": "lightning_modules.schedules.WarmupSchedule", "warmup_steps": 2,
    "decay": "cosine", "total_steps": None, "interval": "step",
}  # fmt: skip


@pytest.mark.parametrize(
    ("trainer_args", "steps"),
    [({"max_epochs": 2, "limit_train_batches": 4}, 8), ({"max_steps": 5, "max_epochs": -1}, 5),
     ({"max_epochs": 3, "accumulate_grad_batches": 2}, 9)],
)  # fmt: skip
def test_total_steps_null_is_the_fits_optimiser_steps(trainer_args: dict, steps: int) -> None:
    """total_steps: null -> trainer.estimated_stepping_batches: the cosine ends where training ends."""
    trainer, model = fit_tiny_lm(COSINE, **trainer_args)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == steps == trainer.global_step
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_total_steps_null_needs_a_step_interval_and_a_finite_fit() -> None:
    with pytest.raises(ConfigError, match="interval=step, not 'epoch'"):
        fit_tiny_lm(COSINE | {"interval": "epoch"}, max_epochs=1)
    with pytest.raises(ConfigError, match="needs a finite fit"):
        fit_tiny_lm(COSINE, max_epochs=-1, max_steps=-1)
