"""The data-module interface (:class:`LitDataModule`) and its in-memory tensor kind.

:class:`LitDataModule` declares what ``train.py`` asks of every data module: besides Lightning's
``prepare_data`` / ``setup`` / loaders, :meth:`~LitDataModule.model_kwargs`, the facts the model
must know before it is built (a vocabulary, its size), and one way to build a loader.

:class:`InMemoryDataModule`: data held in memory as tensors and served as index slices, on the
training device. A subclass fills ``self.splits`` (``"train"``, ``"val"``, ``"test"`` ->
:class:`IndexedTensors`) in ``setup`` and keeps ``batch_size``, ``eval_batch_size``, ``data_on_device`` and ``num_workers``
among its hyperparameters (``shuffle`` and ``shuffle_seed`` too, optionally). A batch is one
advanced-indexing call on each tensor: no per-sample ``__getitem__``, no per-sample collate. On an
accelerator the tensors are moved to the device once, so batches never cross the bus.

The training order is a function of ``(shuffle_seed, epoch)`` only, and a run resumed from a
mid-epoch checkpoint skips the batches it already trained on: it sees exactly the batches the
uninterrupted run would have seen (see :mod:`datamodules.samplers`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.samplers import EpochShuffle, InOrder
from litlab.errors import DataError


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


class LitDataModule(L.LightningDataModule):
    """A LightningDataModule as ``train.py`` uses it.

    ``train.py`` calls ``prepare_data()`` (downloads: safe to run in every process at once, see
    :mod:`datamodules.files`), ``setup("fit")`` and :meth:`model_kwargs` before it builds the
    model, then hands the module to the Trainer, which calls them again (``setup`` must therefore
    return at once when already done). Loaders are built by :meth:`loader`.
    """

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the model's constructor needs from the data (e.g. ``vocab_size``,
        the vocabularies), read after ``setup("fit")``. They are stored in the model's
        checkpoints, so plain Python values only. Default: none."""
        return {}

    def loader(self, dataset: Dataset, num_workers: int = 0, **kwargs: Any) -> DataLoader:
        """A ``DataLoader`` over ``dataset`` (``kwargs``: sampler, batch size, collate...) with
        its own generator: making an iterator draws no number from the global RNG, so loading
        never changes what the model's random draws are."""
        return DataLoader(
            dataset, num_workers=num_workers, generator=torch.Generator().manual_seed(0), **kwargs
        )


class InMemoryDataModule(LitDataModule):
    """Loaders over ``self.splits``; see the module docstring for what a subclass provides."""

    splits: dict[str, IndexedTensors]
    shuffle_seed: int | None = None

    def _loader(self, split: str, batch_size: int, sampler: Any = None) -> DataLoader:
        dataset = self.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        on_device = self.hparams.data_on_device and device is not None and device.type != "cpu"
        if on_device:
            dataset = self.splits[split] = dataset.to(device)
        return self.loader(
            dataset,
            num_workers=0 if on_device else self.hparams.num_workers,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=keep_batch,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by :class:`EpochShuffle` (or in order), resuming mid-epoch where needed."""
        dataset = self.splits["train"]
        if self.hparams.get("shuffle", True):
            sampler: EpochShuffle | InOrder = EpochShuffle(dataset, self.effective_shuffle_seed())
        else:
            sampler = InOrder(dataset)
        sampler.resume(self.trainer, items_per_batch=self.hparams.batch_size)
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


def require_nonempty(sizes: dict[str, int], where: object, why: str) -> None:
    """Refuse data whose train, val or test split came out empty (no validation would mean no
    best checkpoint and no metric for a sweeper), naming the data and the split sizes."""
    empty = [split for split, size in sizes.items() if size == 0]
    if empty:
        counts = ", ".join(f"{split} {size}" for split, size in sizes.items())
        raise DataError(f"{where}: empty {' and '.join(empty)} split ({counts}); {why}")
