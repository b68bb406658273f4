"""Free decoding: greedy and beam search for Seq2Seq, temperature / top-k sampling for a causal LM.

Plain functions of the nets of :mod:`lightning_modules.nets.seq2seq` (no Lightning): ``encoder(src,
mask) -> (memory, state)`` and ``decoder(token, state, memory, mask, keys) -> (logits, state,
weights)``, with the attention's ``keys = decoder.keys(memory)`` computed once per sentence.
Both searches start from ``<sos>`` and stop when every sentence has emitted ``<eos>`` or after
``max_length`` tokens; after its ``<eos>`` a sentence emits ``<pad>``. They return tokens ``(B, L)``
and the attention of each output token over the source ``(B, L, S)`` (None without attention).

Greedy: y_t = argmax_y p(y | y_<t, x). Beam search keeps the ``beam_size`` partial hypotheses of
highest log p(y_<=t | x) = sum_t log p(y_t | y_<t, x) at each step and returns the one maximising
log p(y | x) / |y|**length_penalty; with ``beam_size=1`` it is greedy search.

A causal language model ``lm(idx) -> logits (B, T, V)`` (:mod:`lightning_modules.nets.transformer`)
continues a prompt with :func:`sample_tokens`: w_{t+1} ~ softmax(logits_t / temperature), restricted
to the ``top_k`` most probable words, from the last ``max_context`` tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from litlab.text import EOS, PAD, SOS


@torch.no_grad()
def greedy_decode(
    encoder: nn.Module,
    decoder: nn.Module,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    max_length: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """argmax at each step until every sentence has emitted ``<eos>`` or ``max_length`` tokens.

    Returns tokens ``(B, L)`` (``<pad>`` after a sentence's ``<eos>``) and attention ``(B, L, S)``
    or None.
    """
    memory, state = encoder(src, src_mask)
    keys = decoder.keys(memory)
    token = src.new_full((src.shape[0],), SOS)
    done = torch.zeros_like(token, dtype=torch.bool)
    tokens, attention = [], []
    for _ in range(max_length):
        logits, state, weights = decoder(token, state, memory, src_mask, keys)
        token = logits.argmax(dim=-1).masked_fill(done, PAD)
        tokens.append(token)
        attention.append(weights)
        done = done | (token == EOS)
        if done.all():
            break
    weights = None if attention[0] is None else torch.stack(attention, dim=1)
    return torch.stack(tokens, dim=1), weights


@torch.no_grad()
def beam_search(
    encoder: nn.Module,
    decoder: nn.Module,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    beam_size: int,
    max_length: int,
    length_penalty: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep the ``beam_size`` best partial hypotheses by summed log-probability at each step.

    A hypothesis that has emitted ``<eos>`` is finished: it only extends with ``<pad>`` at no
    cost. Stops when all are finished or after ``max_length`` steps; the winner maximises
    log p / length**length_penalty. With ``beam_size=1`` this is greedy decoding.
    Same outputs as :func:`greedy_decode`.
    """
    k = beam_size
    batch, src_len = src.shape
    memory, state = encoder(src, src_mask)
    memory = memory.repeat_interleave(k, dim=0)
    keys = decoder.keys(memory)
    mask = src_mask.repeat_interleave(k, dim=0)
    state = state.repeat_interleave(k, dim=1)
    scores = memory.new_zeros(batch, k)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand the first only
    token = src.new_full((batch * k,), SOS)
    done = torch.zeros_like(token, dtype=torch.bool)
    seqs = src.new_zeros(batch * k, 0)
    attention = memory.new_zeros(batch * k, 0, src_len)
    offsets = torch.arange(batch, device=src.device).unsqueeze(1) * k
    for _ in range(max_length):
        logits, state, weights = decoder(token, state, memory, mask, keys)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.masked_fill(done.unsqueeze(1), float("-inf"))
        log_probs[:, PAD] = torch.where(done, 0.0, log_probs[:, PAD])
        total = (scores.reshape(-1, 1) + log_probs).view(batch, k * vocab)
        scores, flat = total.topk(k, dim=1)
        rows = (flat // vocab + offsets).view(-1)
        token = (flat % vocab).view(-1)
        state = state[:, rows]
        seqs = torch.cat([seqs[rows], token.unsqueeze(1)], dim=1)
        if weights is not None:
            attention = torch.cat([attention[rows], weights[rows].unsqueeze(1)], dim=1)
        done = done[rows] | (token == EOS)
        if done.all():
            break
    lengths = (seqs != PAD).sum(dim=1).clamp(min=1).view(batch, k).to(scores.dtype)
    best = (scores / lengths.pow(length_penalty)).argmax(dim=1) + offsets.squeeze(1)
    return seqs[best], (attention[best] if weights is not None else None)


@torch.no_grad()
def sample_tokens(
    lm: nn.Module,
    prompt: torch.Tensor,
    num_tokens: int,
    max_context: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue ``prompt`` ``(B, T >= 1)`` by ``num_tokens`` tokens drawn one at a time.

    p(w_{t+1} = v) = softmax(l_t / temperature)_v over the ``top_k`` largest logits l_t (all when
    None), the logits of the last position given the last ``max_context`` tokens (the positions
    the model was built for). ``temperature=0`` takes the argmax (greedy). Put ``lm`` in eval mode
    first (dropout). Returns the new tokens ``(B, num_tokens)``.
    """
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(
            f"the prompt must be (B, T >= 1) token ids, got shape {tuple(prompt.shape)}"
        )
    idx, new = prompt, []
    for _ in range(num_tokens):
        logits = lm(idx[:, -max_context:])[:, -1, :].float()
        if temperature == 0:
            token = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
        idx = torch.cat([idx, token], dim=1)
        new.append(token)
    return torch.cat(new, dim=1) if new else prompt.new_zeros(prompt.shape[0], 0)
