"""The baselines: a plain PyTorch training loop doing the same work as litlab's ``train.py``.

One loop (:func:`plain_fit`) for every study, parameterised by a :class:`PlainSetup`: the nets,
the optimiser and scheduler, the clipping value, a source of batches and a loss function. The
per-study parts are small functions of the *same* composed config:

* nets: taken from litlab's model built from the config (so identical classes, sizes and initial
  weights for a given seed); the loop only ever calls these plain ``nn.Module`` s;
* optimiser and scheduler: built from the same ``model.optimizer`` / ``model.scheduler`` configs;
* data: the data module's own in-memory tensors and split (MNIST, WikiText-2) sliced by index
  here, or for eng-fra, whose sentences are Python lists padded per batch, its own loader;
* loss: the study's objective written out with the same math functions (ELBO terms, masked token
  loss, next-token cross-entropy).

Batch order: epoch *e* is ordered by the data module's own rule (``EpochShuffle``: a permutation
drawn from ``shuffle_seed + e``, no draw from the global generator), so with the same seed the
plain loop and litlab's ``DataLoader`` see identical batches in identical order (and the same
random numbers afterwards: reparameterisation noise, dropout), which ``tests/test_benchmarks.py``
checks loss by loss.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from benchmarks.clock import StepClock
from datamodules.samplers import EpochShuffle
from lightning_modules.seq2seq import Seq2Seq, token_loss
from lightning_modules.transformer_lm import TransformerLM
from lightning_modules.vae import VAE, bernoulli_log_prob, gaussian_kl, reparameterize
from litlab.text import SOS

Batch = Any
LossFn = Callable[[Batch, int], torch.Tensor]


@dataclass
class PlainSetup:
    """Everything :func:`plain_fit` needs; ``epoch_batches()`` yields one epoch's batches."""

    nets: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    scheduler_interval: str
    clip: float | None
    epoch_batches: Callable[[], Iterable[Batch]]
    loss: LossFn


def plain_fit(setup: PlainSetup, clock: StepClock) -> None:
    """Train until ``clock`` is done: zero grads, loss, backward, clip, step; scheduler by
    its interval (``step`` or ``epoch``)."""
    setup.nets.train()
    params = [p for group in setup.optimizer.param_groups for p in group["params"]]
    step = 0
    while not clock.done:
        for batch in setup.epoch_batches():
            setup.optimizer.zero_grad(set_to_none=True)
            loss = setup.loss(batch, step)
            loss.backward()
            if setup.clip:
                nn.utils.clip_grad_norm_(params, setup.clip)
            setup.optimizer.step()
            if setup.scheduler is not None and setup.scheduler_interval == "step":
                setup.scheduler.step()
            step += 1
            clock.step_end(batch, loss.detach())
            if clock.done:
                return
        if setup.scheduler is not None and setup.scheduler_interval == "epoch":
            setup.scheduler.step()


# -- batches ---------------------------------------------------------------------------------
def tensor_batches(
    data: torch.Tensor,
    batch_size: int,
    shuffle_seed: int | None,
    to_batch: Callable[[torch.Tensor], Batch],
) -> Callable[[], Iterator[Batch]]:
    """One epoch per call of index slices of ``data`` (already on the training device), as
    batches; epoch *e* in :class:`EpochShuffle`'s order for ``shuffle_seed`` (None: in order)."""
    epochs = itertools.count()

    def epoch() -> Iterator[Batch]:
        n = len(data)
        if shuffle_seed is None:
            order = torch.arange(n)
        else:
            sampler = EpochShuffle(range(n), shuffle_seed)
            sampler.set_epoch(next(epochs))
            order = torch.as_tensor(sampler.order())
        order = order.to(data.device)
        for start in range(0, n, batch_size):
            yield to_batch(data[order[start : start + batch_size]])

    return epoch


def mnist_batch(binarize: str) -> Callable[[torch.Tensor], Batch]:
    """uint8 images ``(B, 28, 28)`` -> ``(x, None)``, x float ``(B, 1, 28, 28)`` in [0, 1]
    (a fresh Bernoulli sample when ``binarize == "dynamic"``)."""

    def to_batch(images: torch.Tensor) -> Batch:
        x = images.unsqueeze(1).float().div_(255)
        return (torch.bernoulli(x) if binarize == "dynamic" else x), None

    return to_batch


def lm_batch(windows: torch.Tensor) -> Batch:
    """``(B, bptt + 1)`` windows -> inputs and next-token targets, ``(B, bptt)`` each."""
    return windows[:, :-1], windows[:, 1:]


def loader_batches(loader: Iterable[dict], device: torch.device) -> Callable[[], Iterator[dict]]:
    """One epoch of a ``DataLoader`` of dict batches, tensors moved to ``device``."""

    def epoch() -> Iterator[dict]:
        for batch in loader:
            yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    return epoch


def canonical_mnist_batches(
    root: str, indices: torch.Tensor, batch_size: int, device: torch.device, shuffle_seed: int
) -> Callable[[], Iterator[Batch]]:
    """The pipeline a user would write (issue's (c)): torchvision ``MNIST`` + ``ToTensor`` +
    a shuffling ``DataLoader``, restricted to litlab's training split with ``Subset``.

    Its costs are kept (a PIL image and a ``ToTensor`` call per sample, a per-sample collate);
    only the shuffling sampler is litlab's :class:`EpochShuffle`, so that (c) sees the very
    images (a) and (b) see, in the same order (checked loss by loss).
    """
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    dataset = Subset(
        datasets.MNIST(root, train=True, transform=transforms.ToTensor(), download=False),
        indices.tolist(),
    )
    sampler = EpochShuffle(dataset, shuffle_seed)
    # its own generator, as litlab's loaders: making an iterator draws nothing from the global one
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator()
    )
    epochs = itertools.count()

    def epoch() -> Iterator[Batch]:
        sampler.set_epoch(next(epochs))
        for x, labels in loader:
            yield x.to(device), labels

    return epoch


# -- losses ------------------------------------------------------------------------------------
def vae_loss(encoder: nn.Module, decoder: nn.Module, beta: float, warmup: int) -> LossFn:
    """-ELBO averaged over the batch: BCE summed over pixels + (ramped) beta KL."""

    def loss(batch: Batch, step: int) -> torch.Tensor:
        x, _ = batch
        mu, logvar = encoder(x)
        logits = decoder(reparameterize(mu, logvar))
        weight = beta * min(1.0, (step + 1) / warmup) if warmup > 0 else beta
        return (-bernoulli_log_prob(logits, x) + weight * gaussian_kl(mu, logvar)).mean()

    return loss


def seq2seq_loss(
    encoder: nn.Module, decoder: nn.Module, sos: int, ratio: float, masked: bool, smoothing: float
) -> LossFn:
    """Token cross-entropy of the reference, decoder unrolled one step at a time from ``<sos>``,
    fed the reference with probability ``ratio`` (else its own greedy guess) per token."""

    def loss(batch: Batch, step: int) -> torch.Tensor:
        src, src_mask, tgt = batch["src"], batch["src_mask"], batch["tgt"]
        memory, state = encoder(src, src_mask)
        keys = decoder.keys(memory)
        token = src.new_full((src.shape[0],), sos)
        logits = []
        for t in range(tgt.shape[1]):
            step_logits, state, _ = decoder(token, state, memory, src_mask, keys)
            logits.append(step_logits)
            token = tgt[:, t]
            if ratio < 1.0:
                use_ref = torch.rand(tgt.shape[0], device=tgt.device) < ratio
                token = torch.where(use_ref, token, step_logits.detach().argmax(dim=-1))
        return token_loss(torch.stack(logits, 1), tgt, batch["tgt_mask"], masked, smoothing)

    return loss


def lm_loss(net: nn.Module) -> LossFn:
    """Mean next-token cross-entropy over the batch's B x T positions."""

    def loss(batch: Batch, step: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(net(x).flatten(0, 1), y.flatten())

    return loss


# -- setups ------------------------------------------------------------------------------------
def optimizers(module: nn.Module) -> tuple[torch.optim.Optimizer, Any | None, str]:
    """The optimiser and scheduler the model's configs describe, as plain torch objects
    (built by the model's ``configure_optimizers``, which only instantiates the configs)."""
    configured = module.configure_optimizers()
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None, "epoch"
    scheduler = configured["lr_scheduler"]
    return configured["optimizer"], scheduler["scheduler"], scheduler.get("interval", "epoch")


def plain_setup(
    cfg: DictConfig,
    datamodule: Any,
    module: nn.Module,
    device: torch.device,
    canonical_root: str | None = None,
) -> PlainSetup:
    """The :class:`PlainSetup` of the study ``module`` belongs to, on ``device``.

    ``canonical_root`` (VAEs only): batches from :func:`canonical_mnist_batches` instead.
    """
    module.to(device)
    optimizer, scheduler, interval = optimizers(module)
    clip = cfg.trainer.get("gradient_clip_val")
    data = cfg.data
    if isinstance(module, VAE):
        hp = module.hparams
        nets = nn.ModuleList([module.encoder, module.decoder])
        if canonical_root is not None:
            indices = datamodule.split_indices["train"]
            seed = datamodule.effective_shuffle_seed()
            batches = canonical_mnist_batches(canonical_root, indices, data.batch_size, device,
                                              seed)  # fmt: skip
        else:
            images, _ = datamodule.splits["train"].tensors
            to_batch = mnist_batch(data.binarize)
            seed = datamodule.effective_shuffle_seed()
            batches = tensor_batches(images.to(device), data.batch_size, seed, to_batch)
        loss = vae_loss(module.encoder, module.decoder, hp.beta, hp.kl_warmup_steps)
    elif isinstance(module, TransformerLM):
        nets = module.net
        (windows,) = datamodule.splits["train"].tensors
        seed = datamodule.effective_shuffle_seed() if data.shuffle else None
        batches = tensor_batches(windows.to(device), data.batch_size, seed, lm_batch)
        loss = lm_loss(module.net)
    elif isinstance(module, Seq2Seq):
        hp = module.hparams
        nets = nn.ModuleList([module.encoder, module.decoder])
        batches = loader_batches(datamodule.train_dataloader(), device)
        loss = seq2seq_loss(module.encoder, module.decoder, SOS, hp.teacher_forcing_ratio,
                            hp.mask_loss, hp.label_smoothing)  # fmt: skip
    else:
        raise TypeError(f"no plain loop for {type(module).__name__}")
    return PlainSetup(nets, optimizer, scheduler, interval, clip, batches, loss)


def steps_per_epoch(datamodule: Any) -> int:
    """Training batches in one epoch of ``datamodule`` (set up)."""
    return len(datamodule.train_dataloader())
