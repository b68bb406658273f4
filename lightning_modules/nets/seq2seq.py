"""GRU encoder, attention modules and a one-step GRU decoder for sequence-to-sequence translation.

Shapes: batch first. Source ids ``(B, S)`` with a boolean ``mask`` ``(B, S)`` (True on real tokens,
padding on the right); the encoder returns ``memory`` ``(B, S, H)`` and the decoder's initial state
``(num_layers, B, H)``. The decoder runs one step at a time: teacher forcing drives it from
:class:`lightning_modules.seq2seq.Seq2Seq`, greedy and beam search from
:mod:`lightning_modules.nets.decoding`.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from litlab.ranges import Interval, PositiveInt

ATTENTION_KINDS = ("bahdanau", "dot", "none")


class Encoder(nn.Module):
    """Embedding -> dropout -> GRU over the real tokens only (packed).

    With ``bidirectional=True`` the two directions' outputs are concatenated and projected back to
    ``hidden_dim`` (so every attention kind sees keys of the decoder's size), and the decoder's
    initial state per layer is ``tanh(W [h_fwd; h_bwd])`` (Bahdanau et al., 2015).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_dim: PositiveInt = 256,
        embed_dim: PositiveInt = 256,
        num_layers: PositiveInt = 1,
        bidirectional: bool = False,
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(
            embed_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        if bidirectional:
            self.memory_proj = nn.Linear(2 * hidden_dim, hidden_dim)
            self.state_proj = nn.Linear(2 * hidden_dim, hidden_dim)

    def forward(self, src: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``src``, ``mask`` ``(B, S)`` -> memory ``(B, S, H)`` (zeros on padding), state ``(L, B, H)``."""
        lengths = mask.sum(dim=1).cpu()
        embedded = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        outputs, state = self.rnn(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
        if self.bidirectional:
            memory = self.memory_proj(memory) * mask.unsqueeze(-1)
            state = state.view(self.num_layers, 2, *state.shape[1:])  # (L, dir, B, H)
            state = torch.tanh(self.state_proj(torch.cat([state[:, 0], state[:, 1]], dim=-1)))
        return memory, state


class Attention(nn.Module):
    """Masked softmax over source positions of a score ``e_j = score(s, k_j)`` of keys ``k_j``:

    alpha_j = exp(e_j) / sum_{k real} exp(e_k) on real tokens, 0 on padding; context = sum_j alpha_j h_j.
    Subclasses define :meth:`score`, and :meth:`keys` when a key is not the memory itself. Keys
    depend on the source only: a decoder computes them once per sentence (:meth:`Decoder.keys`),
    not at every step.
    """

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """``k_j`` from the encoder's ``h_j``, ``(B, S, H)``: the memory itself by default."""
        return memory

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query ``(B, H)``, memory ``(B, S, H)``, mask ``(B, S)`` -> context ``(B, H)``, weights ``(B, S)``."""
        keys = self.keys(memory) if keys is None else keys
        scores = self.score(query, keys).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights


class BahdanauAttention(Attention):
    """Additive attention (Bahdanau et al., 2015): ``score(s, h_j) = v^T tanh(W_q s + k_j)`` with
    keys ``k_j = W_k h_j + b``."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(hidden_dim, hidden_dim)
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_proj(memory)

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        energy = torch.tanh(self.query_proj(query).unsqueeze(1) + keys)
        return self.v(energy).squeeze(-1)


class DotAttention(Attention):
    """Dot-product attention (Luong et al., 2015), no parameters: ``score(s, h_j) = s^T h_j``."""

    def score(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)


def make_attention(kind: str, hidden_dim: int) -> Attention | None:
    """``bahdanau`` | ``dot`` | ``none`` (no attention: the decoder sees the final state only)."""
    if kind == "bahdanau":
        return BahdanauAttention(hidden_dim)
    if kind == "dot":
        return DotAttention()
    if kind == "none":
        return None
    raise ValueError(f"model.attention={kind!r} is not one of: {', '.join(ATTENTION_KINDS)}")


class Decoder(nn.Module):
    """One decoding step: previous token y_{t-1}, state s_{t-1} -> logits for y_t, s_t, alpha_t.

    With attention (the tutorial's ``AttnDecoderRNN``): c_t = attend(s_{t-1}, memory),
    s_t = GRU([emb(y_{t-1}); c_t], s_{t-1}), logits = W_o dropout(tanh(W_c [s_t; c_t])).
    Without attention (``none``): s_t = GRU(emb(y_{t-1}), s_{t-1}), logits = W_o dropout(s_t); the
    source reaches the decoder only through s_0, the encoder's final state (report Q13).

    ``tie_weights=True`` shares W_o with the embedding matrix (Press & Wolf, 2017; needs
    ``embed_dim == hidden_dim``): the shared matrix starts at the output layer's scale,
    U(-1/sqrt(H), 1/sqrt(H)), with the ``<pad>`` row at zero.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_dim: PositiveInt = 256,
        embed_dim: PositiveInt = 256,
        num_layers: PositiveInt = 1,
        attention: str = "bahdanau",
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1,
        padding_idx: int = 0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        if tie_weights and embed_dim != hidden_dim:
            raise ValueError(
                f"tie_weights=true shares the decoder's embedding with its output layer: it "
                f"needs embed_dim ({embed_dim}) == hidden_dim ({hidden_dim})"
            )
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.dropout = nn.Dropout(dropout)
        self.attention = make_attention(attention, hidden_dim)
        context_dim = hidden_dim if self.attention is not None else 0
        self.rnn = nn.GRU(
            embed_dim + context_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        # [s_t; c_t] -> tanh(W_c [s_t; c_t]) of size H before the vocabulary projection (Luong et
        # al., 2015): the V-sized output layer, the costliest one, then reads H features, not 2H
        self.combine = nn.Linear(hidden_dim + context_dim, hidden_dim) if context_dim else None
        self.out = nn.Linear(hidden_dim, vocab_size)
        if tie_weights:
            self.out.weight = self.embedding.weight
            bound = hidden_dim**-0.5
            with torch.no_grad():
                self.embedding.weight.uniform_(-bound, bound)
                self.embedding.weight[padding_idx].zero_()

    def keys(self, memory: torch.Tensor) -> torch.Tensor | None:
        """The attention's keys of a memory ``(B, S, H)`` (None without attention): computed once
        per sentence and passed to every step, which then skips them."""
        return None if self.attention is None else self.attention.keys(memory)

    def forward(
        self,
        token: torch.Tensor,
        state: torch.Tensor,
        memory: torch.Tensor,
        mask: torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """token ``(B,)``, state ``(L, B, H)`` -> logits ``(B, V)``, state, weights ``(B, S)`` or None.

        ``keys``: :meth:`keys` of ``memory`` (computed here when not given)."""
        inputs = self.dropout(self.embedding(token))
        weights = None
        if self.attention is not None:
            context, weights = self.attention(state[-1], memory, mask, keys)
            inputs = torch.cat([inputs, context], dim=-1)
        output, state = self.rnn(inputs.unsqueeze(1), state)
        features = output.squeeze(1)
        if self.combine is not None:
            features = torch.tanh(self.combine(torch.cat([features, context], dim=-1)))
        return self.out(self.dropout(features)), state, weights
