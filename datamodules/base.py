"""Data held in memory as tensors and served as index slices, on the training device.

A subclass fills ``self.splits`` (``"train"``, ``"val"``, ``"test"`` -> :class:`IndexedTensors`) in
``setup`` and keeps ``batch_size``, ``eval_batch_size``, ``data_on_device`` and ``num_workers``
among its hyperparameters (``shuffle`` too, optionally). A batch is one advanced-indexing call on
each tensor: no per-sample ``__getitem__``, no per-sample collate. On an accelerator the tensors
are moved to the device once, so batches never cross the bus.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


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


class InMemoryDataModule(L.LightningDataModule):
    """Loaders over ``self.splits``; see the module docstring for what a subclass provides."""

    splits: dict[str, IndexedTensors]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        on_device = self.hparams.data_on_device and device is not None and device.type != "cpu"
        if on_device:
            dataset = self.splits[split] = dataset.to(device)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=keep_batch,
            num_workers=0 if on_device else self.hparams.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        shuffle = self.hparams.get("shuffle", True)
        return self._loader("train", self.hparams.batch_size, shuffle=shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, shuffle=False)
