"""Data held in memory as tensors and served as index slices, on the training device.

A subclass fills ``self.splits`` (``"train"``, ``"val"``, ``"test"`` -> :class:`IndexedTensors`) in
``setup`` and keeps ``batch_size``, ``eval_batch_size``, ``data_on_device`` and ``num_workers``
among its hyperparameters (``shuffle`` and ``shuffle_seed`` too, optionally). A batch is one
advanced-indexing call on each tensor: no per-sample ``__getitem__``, no per-sample collate. On an
accelerator the tensors are moved to the device once, so batches never cross the bus.

The training order is a function of ``(shuffle_seed, epoch)`` only, and a run resumed from a
mid-epoch checkpoint skips the batches it already trained on: it sees exactly the batches the
uninterrupted run would have seen (see :class:`EpochShuffle`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler


class IndexedTensors(Dataset):
    """Tensors sliced by a whole list of indices at once (``__getitems__``), no collate needed."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return tuple(t[index] for t in self.tensors)

    def to(self, device: torch.device) -> IndexedTensors:
        return IndexedTensors(*(t.to(device) for t in self.tensors))


def keep_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Collate function for :class:`IndexedTensors`: the batch is already stacked."""
    return batch


class EpochShuffle(RandomSampler):
    """A random order drawn from ``seed + epoch`` alone, so any process can replay it.

    Lightning calls :meth:`set_epoch` before each epoch (under DDP it swaps this sampler for a
    ``DistributedSampler``, which orders by ``seed + epoch`` in the same spirit). ``start``
    skips that many items of the next pass only: a run resumed mid-epoch continues the order.
    """

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source)
        self.seed, self.epoch, self.start = seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.data_source), generator=generator).tolist()

    def __iter__(self):
        start, self.start = self.start, 0
        return iter(self.order()[start:])


class InOrder(SequentialSampler):
    """``0, 1, ..., n-1``; ``start`` skips items of the next pass (see :class:`EpochShuffle`)."""

    def __init__(self, data_source: Dataset) -> None:
        super().__init__(data_source)
        self.start = 0

    def __iter__(self):
        start, self.start = self.start, 0
        return iter(range(start, len(self.data_source)))


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


class InMemoryDataModule(L.LightningDataModule):
    """Loaders over ``self.splits``; see the module docstring for what a subclass provides."""

    splits: dict[str, IndexedTensors]
    shuffle_seed: int | None = None

    def _loader(self, split: str, batch_size: int, sampler: Any = None) -> DataLoader:
        dataset = self.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        on_device = self.hparams.data_on_device and device is not None and device.type != "cpu"
        if on_device:
            dataset = self.splits[split] = dataset.to(device)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=keep_batch,
            num_workers=0 if on_device else self.hparams.num_workers,
            # its own generator: making an iterator draws no number from the global RNG
            generator=torch.Generator().manual_seed(0),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by :class:`EpochShuffle` (or in order), resuming mid-epoch where needed."""
        dataset = self.splits["train"]
        if self.hparams.get("shuffle", True):
            sampler: EpochShuffle | InOrder = EpochShuffle(dataset, self.effective_shuffle_seed())
        else:
            sampler = InOrder(dataset)
        epoch, done = resume_position(self.trainer)
        sampler.epoch = epoch
        sampler.start = done * self.hparams.batch_size
        return self._loader("train", self.hparams.batch_size, sampler)

    def effective_shuffle_seed(self) -> int:
        """``shuffle_seed``, or one drawn once when it is None (kept in checkpoints)."""
        if self.shuffle_seed is None:
            seed = self.hparams.get("shuffle_seed")
            self.shuffle_seed = int(torch.randint(2**31, ())) if seed is None else int(seed)
        return self.shuffle_seed

    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_seed": self.effective_shuffle_seed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shuffle_seed = state_dict.get("shuffle_seed", self.shuffle_seed)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size)
