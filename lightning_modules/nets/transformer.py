"""A causal Transformer language model, small enough to read in one sitting (after nanoGPT).

Shapes are batch_first: token ids ``(B, T)`` -> logits ``(B, T, vocab_size)``.

    x_0 = dropout(sqrt(d_model) * E[tokens] + PE)        scaled embedding + sinusoidal positions
    x_l = Block_l(x_{l-1}),  l = 1 .. num_layers           causal self-attention + MLP, see Block
    logits = W_out LN_f(x_L) + b  (pre-LN, Peri-LN)  |  W_out x_L + b  (post-LN: x_L is normalised)

The only switch between the three LayerNorm placements is ``norm`` (``post | pre | peri``) in
:class:`Block`, plus the final LayerNorm that pre-LN and Peri-LN need (their residual stream is
never normalised otherwise). Unlike ``nn.TransformerEncoderLayer`` (pytorch/examples), dropout is
applied as configured everywhere, and unlike Lightning's demo Transformer every position gets its
own positional encoding.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
Norm = Literal["post", "pre", "peri"]  # where each Block puts its LayerNorms, see Block
NORMS: tuple[Norm, ...] = typing.get_args(Norm)


@dataclass
class TransformerConfig:
    vocab_size: int
    d_model: int = 200
    num_heads: int = 2
    d_ff: int = 200
    num_layers: int = 2
    dropout: float = 0.2
    norm: Norm = "post"  # post-LN (Vaswani et al. 2017), pre-LN (Xiong et al. 2020), Peri-LN (Kim et al. 2025)
    tie_weights: bool = False  # output projection shares the embedding matrix (Press & Wolf 2017)
    activation: str = "relu"
    max_len: int = 1024  # longest sequence the positional table covers
    init_range: float = 0.1  # embedding / output weights ~ U(-r, r), as the PyTorch tutorial
    residual_scale: float = 1.0  # post-LN only: x = LN(alpha x + F(x)) (DeepNorm, Wang et al. 2022)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of: {', '.join(NORMS)}")
        if self.residual_scale != 1.0 and self.norm != "post":
            raise ValueError(
                f"residual_scale={self.residual_scale} applies to post-LN only "
                f"(norm={self.norm!r}): leave it at 1.0"
            )


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)) (Vaswani et al. 2017).

    Returns ``(max_len, d_model)``; an odd ``d_model`` drops the last cosine column.
    """
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model)
    )
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq)[:, : d_model // 2]
    return pe


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t only.

    softmax(Q K^T / sqrt(d_head) + M) V per head, M = -inf above the diagonal, computed by
    ``F.scaled_dot_product_attention(is_causal=True)`` (flash / memory-efficient kernels on GPU).
    ``c_proj`` is the attention-output weight W^O that the gradient probe watches. The dropout
    on this sub-layer's output is the Block's (it comes after Peri-LN's output LayerNorm).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.d_model % config.num_heads:
            raise ValueError(
                f"d_model={config.d_model} is not divisible by num_heads={config.num_heads}"
            )
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, d_head)
        q, k, v = (
            t.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    """Position-wise feed-forward sub-layer: W_2 dropout(act(W_1 x + b_1)) + b_2.

    The dropout on its output is the Block's, as for the attention.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, config.d_ff)  # W_1
        self.act = ACTIVATIONS[config.activation]()
        self.dropout = nn.Dropout(config.dropout)
        self.c_proj = nn.Linear(config.d_ff, config.d_model)  # W_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.dropout(self.act(self.c_fc(x))))


class Block(nn.Module):
    """One Transformer layer; ``norm`` places its LayerNorms (nothing else changes).

    post-LN (``norm="post"``, Vaswani et al. 2017, the report's eq. 21; alpha =
    ``residual_scale``, 1 unless set: DeepNorm's up-weighted residual, Wang et al. 2022)::

        x = LN_1(alpha x + Attn(x))
        x = LN_2(alpha x + MLP(x))

    pre-LN (``norm="pre"``, Xiong et al. 2020; nanoGPT)::

        x = x + Attn(LN_1(x))
        x = x + MLP(LN_2(x))

    Peri-LN (``norm="peri"``, Kim et al. 2025; Gemma 2's blocks): each sub-layer's input *and*
    output are normalised, the residual stream itself never is::

        x = x + LN_1out(Attn(LN_1(x)))
        x = x + LN_2out(MLP(LN_2(x)))

    Dropout acts on each sub-layer's branch just before the residual add (after LN_out with
    Peri-LN, so that the output LayerNorm sees the whole output). With pre-LN the residual path
    is the identity, so d x_{l+1} / d x_l = I + (...) and the gradient reaches the embedding
    undamped; with post-LN every layer multiplies it by the LayerNorm Jacobian (report Q15-16).
    Peri-LN keeps pre-LN's identity path, and its LN_out bounds what each layer adds to the
    stream (variance ~ +1 per sub-layer at initialisation, whatever the sub-layer's scale).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm = config.norm
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)
        if self.norm == "peri":  # only Peri-LN has them: post/pre state dicts are unchanged
            self.ln_1_out = nn.LayerNorm(config.d_model)
            self.ln_2_out = nn.LayerNorm(config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.alpha = config.residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "post":
            x = self.ln_1(self.alpha * x + self.drop(self.attn(x)))
            x = self.ln_2(self.alpha * x + self.drop(self.mlp(x)))
        elif self.norm == "pre":
            x = x + self.drop(self.attn(self.ln_1(x)))
            x = x + self.drop(self.mlp(self.ln_2(x)))
        else:  # peri
            x = x + self.drop(self.ln_1_out(self.attn(self.ln_1(x))))
            x = x + self.drop(self.ln_2_out(self.mlp(self.ln_2(x))))
        return x


class Transformer(nn.Module):
    """Embedding (scaled) + sinusoidal positions -> ``num_layers`` Blocks -> (LN_f) -> logits.

    Initialisation: Linear weights Xavier-uniform and biases zero (the setting of Xiong et al.'s
    analysis; ``nn.MultiheadAttention`` does the same for its input projection); embedding and
    output weights U(-0.1, 0.1) with a zero output bias, as the PyTorch Transformer tutorial.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.register_buffer(
            "pe", sinusoidal_positions(config.max_len, config.d_model), persistent=False
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        # pre-LN's and Peri-LN's residual stream is unnormalised: one LayerNorm before the output
        # (GPT-2, nanoGPT; Gemma 2's final norm for Peri-LN)
        self.ln_f = nn.Identity() if config.norm == "post" else nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.reset_parameters()
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        r = self.config.init_range
        nn.init.uniform_(self.wte.weight, -r, r)
        nn.init.uniform_(self.lm_head.weight, -r, r)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """x_0 = dropout(sqrt(d_model) E[idx] + PE[:T]), ``(B, T, d_model)``."""
        length, max_len = idx.shape[1], self.config.max_len
        if length > max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={max_len}")
        return self.drop(self.wte(idx) * math.sqrt(self.config.d_model) + self.pe[:length])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def probe_parameters(self) -> dict[str, nn.Parameter]:
        """The weights whose gradient norms the LN study follows, by name.

        ``embedding``; per layer l: ``attn_out/l`` (W^O), ``ffn_in/l`` (W_1), ``ffn_out/l`` (W_2).
        """
        params = {"embedding": self.wte.weight}
        for i, block in enumerate(self.blocks):
            params[f"attn_out/{i}"] = block.attn.c_proj.weight
            params[f"ffn_in/{i}"] = block.mlp.c_fc.weight
            params[f"ffn_out/{i}"] = block.mlp.c_proj.weight
        return params
