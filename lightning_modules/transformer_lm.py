"""Causal Transformer language model on a token stream (WikiText-2).

Objective: the mean next-token cross-entropy over the batch's B x T positions,

    loss = -1/(B T) sum_{b,t} log p(w_{b,t+1} | w_{b,<=t}),    perplexity = exp(loss over a split),

with p given by :class:`lightning_modules.nets.transformer.Transformer`. Validation and test
perplexity are corpus-level (torchmetrics ``Perplexity``: total log-likelihood over every token of
the split, then exp), not a mean of per-batch perplexities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.text import Perplexity

from lightning_modules.base import STAGES, LitModule, running_mean
from lightning_modules.nets.transformer import Norm, Transformer, TransformerConfig
from litlab.errors import ConfigError
from litlab.ranges import Ge, Interval, PositiveFloat, PositiveInt
from litlab.text import IGNORE_INDEX

Batch = tuple[torch.Tensor, torch.Tensor]
NORM_FIRST: dict[bool, Norm] = {False: "post", True: "pre"}  # the older switch, as a placement


def placement(norm: Norm | None, norm_first: bool | None) -> Norm:
    """The LayerNorm placement from ``norm``, or from the older ``norm_first`` (false: post,
    true: pre; checkpoints before Peri-LN store only it); post-LN when neither is given.

    Raises:
        ConfigError: both are given and disagree.
    """
    alias = None if norm_first is None else NORM_FIRST[bool(norm_first)]
    if norm is not None and alias is not None and norm != alias:
        raise ConfigError(
            f"model.norm={norm} and model.norm_first={str(norm_first).lower()} disagree "
            f"(norm_first={str(norm_first).lower()} means norm={alias}): give model.norm alone"
        )
    return norm or alias or "post"


class TransformerLM(LitModule):
    """Next-token prediction with a causal Transformer; perplexity on val/test.

    Args:
        vocab_size: from the datamodule (``model_kwargs``), saved in the checkpoint.
        optimizer, scheduler: ``_target_`` configs (see :class:`LitModule`); e.g. AdamW, or SGD
            with StepLR as the PyTorch tutorial, or
            :class:`lightning_modules.schedules.WarmupSchedule` (``interval: step``).
        d_model, num_heads, d_ff, num_layers, dropout, tie_weights, activation, max_len,
        init_range, residual_scale: the architecture (:class:`TransformerConfig`; residual_scale
            alpha, post-LN only: x = LN(alpha x + F(x))), all of it model-level: it
            lives at ``model.*`` so that sweeps read ``model.num_layers=1,2,4
            model.norm=post,pre,peri``, and is passed whole to the net.
        norm: the LayerNorm placement, ``post | pre | peri`` (see
            :class:`lightning_modules.nets.transformer.Block`).
        norm_first: the older switch, kept as an alias (false: post, true: pre): old checkpoints
            store it, and ``model.norm_first=false,true`` still sweeps; with ``norm`` it must
            agree (:func:`placement`).
        compile: ``torch.compile`` the network in place (see :class:`LitModule`).
    """

    def __init__(
        self,
        vocab_size: Annotated[int, Ge(2)],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        d_model: PositiveInt = 200,
        num_heads: PositiveInt = 2,
        d_ff: PositiveInt = 200,
        num_layers: PositiveInt = 2,
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.2,
        norm: Norm | None = None,
        norm_first: bool | None = None,
        tie_weights: bool = False,
        activation: Literal["relu", "gelu"] = "relu",
        max_len: PositiveInt = 1024,
        init_range: PositiveFloat = 0.1,
        residual_scale: PositiveFloat = 1.0,
        compile: bool | Mapping[str, Any] | None = False,
    ) -> None:
        super().__init__(optimizer, scheduler, compile)
        self.save_hyperparameters()
        sizes = dict(
            vocab_size=vocab_size, d_model=d_model, num_heads=num_heads, d_ff=d_ff,
            num_layers=num_layers, dropout=dropout, norm=placement(norm, norm_first),
            tie_weights=tie_weights, activation=activation, max_len=max_len,
            init_range=init_range, residual_scale=residual_scale,
        )  # fmt: skip
        self.net = Transformer(TransformerConfig(**sizes))
        self.metrics = nn.ModuleDict({f"{stage}/loss": running_mean() for stage in STAGES})
        for stage in ("val", "test"):
            self.metrics[f"{stage}/ppl"] = Perplexity(ignore_index=IGNORE_INDEX)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab_size)``."""
        return self.net(idx)

    @staticmethod
    def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the scored positions (targets != IGNORE_INDEX)."""
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)

    def loss(self, batch: Batch) -> torch.Tensor:
        """The training objective on one batch, without logging (used by the gradient probe)."""
        x, y = batch
        return self.token_loss(self(x), y)

    def probe_parameters(self) -> dict[str, nn.Parameter]:
        """Named weights whose gradient norms :class:`litlab.callbacks.grad_probe.GradProbe` records."""
        return self.net.probe_parameters()

    def probe_blocks(self) -> list[nn.Module]:
        """The residual blocks whose forward signal the probe measures (``attn``, ``mlp`` each)."""
        return list(self.net.blocks)

    def _shared_step(self, batch: Batch, stage: str, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.token_loss(logits, y)
        self.log_epoch(f"{stage}/loss", loss.detach(), (y != IGNORE_INDEX).sum(),
                       batch_idx=batch_idx, prog_bar=True)  # fmt: skip
        if stage != "train":
            # float64: the metric takes softmax then log, which must not underflow to log(0)
            self.log_epoch(f"{stage}/ppl", logits.detach().double(), y, batch_idx=batch_idx)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train", batch_idx)
        # mean over DDP ranks: an all-reduce, no host sync
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, sync_dist=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val", batch_idx)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test", batch_idx)
