"""Resumable training orders: the epoch's order is a function of ``(seed, epoch)`` alone.

Any process can replay the order of any epoch, and a run resumed from a mid-epoch checkpoint
skips the batches it already trained on, so it sees exactly the batches the uninterrupted run
would have seen. Every sampler here shares that mechanism (:class:`ResumableOrder`):

* ``epoch``: the pass being drawn; its order comes from a generator seeded with ``seed + epoch``;
* ``start``: how many items (batches, for a batch sampler) of the *next* pass to skip, then 0;
* :meth:`ResumableOrder.resume`: both set from a restarting Trainer (:func:`resume_position`).

:class:`EpochShuffle` and :class:`InOrder` order the items of an in-memory split (Lightning
calls ``set_epoch`` before each epoch, and under DDP swaps them for a ``DistributedSampler``,
which orders by ``seed + epoch`` in the same spirit); :class:`BucketBatchSampler` orders whole
batches of similar length and shards them across DDP ranks itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import BatchSampler, Dataset, RandomSampler, Sampler, SequentialSampler


def resume_position(trainer: L.Trainer | None) -> tuple[int, int]:
    """``(epoch, training batches already done in it)`` for the train loader being built.

    Non-zero only when fit restarts from a checkpoint saved in the middle of an epoch, where
    Lightning's restored loop counters say how many batches that epoch had processed.
    """
    if trainer is None:
        return 0, 0
    loop = trainer.fit_loop
    done = loop.epoch_loop.batch_progress.current.processed if loop.restarting else 0
    return trainer.current_epoch, done


class ResumableOrder:
    """The shared state of a resumable order: ``seed``, ``epoch`` and ``start`` (module docstring)."""

    seed: int | None = None
    epoch: int = 0
    start: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, trainer: L.Trainer | None, items_per_batch: int = 1) -> None:
        """Continue where a restarting ``trainer`` left off: its epoch, and the items of the
        batches it already trained on skipped (``items_per_batch`` items per batch)."""
        self.epoch, done = resume_position(trainer)
        self.start = done * items_per_batch

    def epoch_generator(self) -> torch.Generator:
        """A generator seeded with ``seed + epoch`` (``seed`` None: unseeded)."""
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed + self.epoch)
        return generator

    def take_start(self) -> int:
        """``start`` for this pass; the next pass starts from the beginning."""
        start, self.start = self.start, 0
        return start


class EpochShuffle(ResumableOrder, RandomSampler):
    """A random permutation of the items drawn from ``seed + epoch``."""

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch, self.start = seed, 0, 0

    def order(self) -> list[int]:
        return torch.randperm(len(self.data_source), generator=self.epoch_generator()).tolist()

    def __iter__(self) -> Iterator[int]:
        start = self.take_start()
        return iter(self.order()[start:])


class InOrder(ResumableOrder, SequentialSampler):
    """``0, 1, ..., n-1`` every epoch; ``start`` skips items of the next pass."""

    def __init__(self, data_source: Dataset) -> None:
        super().__init__(data_source)
        self.epoch, self.start = 0, 0

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.take_start(), len(self.data_source)))


class BucketBatchSampler(ResumableOrder, BatchSampler):
    """Batches of similar length, sharded across data-parallel ranks.

    ``shuffle=True``: a fresh permutation every pass (drawn from ``seed + epoch``; ``epoch``
    counts the passes, the first given when the loader is built, e.g. on resuming), cut into pools
    of ``pool_batches * batch_size`` indices, each pool sorted by length and cut into batches,
    then the batch order shuffled; ``start`` skips that many batches of the next pass only.
    ``pool_batches=1`` gives plain random batches. ``shuffle=False``: indices sorted by length
    (stable), in order (evaluation).

    Data-parallel (DDP): Lightning cannot shard a custom batch sampler's output, so it re-creates
    this one with a ``DistributedSampler`` as ``sampler``; only that sampler's ``rank`` and
    ``num_replicas`` are read. Every rank draws the same permutation (same seed, same epoch), pads
    it to a multiple of the world size by repeating its first indices (as ``DistributedSampler``
    does) and keeps every ``num_replicas``-th index from ``rank``: the shards are disjoint, cover the
    whole split, change every epoch and have equal sizes, so every rank runs the same number of
    batches (DDP needs that). Without a sampler (one process) nothing is sharded.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        pool_batches: int = 50,
        seed: int | None = 0,
        sampler: Sampler[int] | None = None,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last=False)  # type: ignore[arg-type]
        self.lengths = list(lengths)
        self.shuffle = shuffle
        self.pool_batches = max(1, pool_batches)
        self.seed, self.epoch, self.start = seed, 0, 0
        self.rank = int(getattr(sampler, "rank", 0))
        self.num_replicas = int(getattr(sampler, "num_replicas", 1))

    def __len__(self) -> int:
        # pools hold whole batches, so a shard of m indices always gives ceil(m / batch_size)
        return (self._shard_size() + self.batch_size - 1) // self.batch_size

    def _shard_size(self) -> int:
        return (len(self.lengths) + self.num_replicas - 1) // self.num_replicas

    def _shard(self, order: list[int]) -> list[int]:
        """This rank's share of ``order``: padded to a multiple of the world size, strided."""
        if self.num_replicas == 1:
            return order
        total = self._shard_size() * self.num_replicas
        padded = order + order[: total - len(order)]
        return padded[self.rank :: self.num_replicas]

    def _by_length(self, indices: list[int]) -> list[int]:
        return sorted(indices, key=lambda i: self.lengths[i])

    def epoch_generator(self) -> torch.Generator:
        if self.seed is None and self.num_replicas > 1:  # ranks must agree: seed by epoch only
            return torch.Generator().manual_seed(self.epoch)
        return super().epoch_generator()

    def __iter__(self) -> Iterator[list[int]]:
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = self._by_length(self._shard(list(range(n))))
            yield from (order[i : i + size] for i in range(0, len(order), size))
            return
        generator = self.epoch_generator()
        self.epoch += 1
        order = self._shard(torch.randperm(n, generator=generator).tolist())
        pool = size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = self._by_length(chunk) if self.pool_batches > 1 else chunk
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        start = self.take_start()
        for b in torch.randperm(len(batches), generator=generator).tolist()[start:]:
            yield batches[b]
