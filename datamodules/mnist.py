"""MNIST from the original IDX files, held in memory and sliced by index.

The whole split lives in one ``uint8`` tensor ``(N, 28, 28)``; a batch is an index slice of it
(no per-sample PIL transform, no per-sample collate). Conversion to ``float`` and binarisation
happen in :meth:`MNISTDataModule.on_after_batch_transfer`, i.e. on the training device.

Pixel modes (``binarize``):

* ``dynamic``: the training image is resampled every time, ``x ~ Bernoulli(grey / 255)`` — the
  standard for likelihood numbers. Validation and test images are binarised once with a fixed
  seed (``eval_binarize_seed``) so that evaluations are comparable across epochs and runs.
* ``static``: every image thresholded once at 0.5.
* ``none``: grey levels in [0, 1] used as (soft) BCE targets, as in the report.
"""

from __future__ import annotations

import struct
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import torch

from datamodules.base import IndexedTensors, InMemoryDataModule
from datamodules.files import cached_tensors, fetch_missing, file_stamp, read_bytes
from litlab.errors import ConfigError, DataError
from litlab.ranges import Interval, NonNegativeInt, PositiveInt, Seed

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# SHA-256 of the original gzip files (their MD5s are those torchvision lists).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

CACHE_VERSION = 1  # bump when what setup() computes changes
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
IMAGE_SIDE = 28


class Binarize(str, Enum):
    """How grey levels become BCE targets (see the module docstring)."""

    DYNAMIC = "dynamic"
    STATIC = "static"
    NONE = "none"


def read_idx(path: Path, magic: int, trailing_shape: tuple[int, ...]) -> torch.Tensor:
    """Read a gzip'd IDX file into a ``uint8`` tensor of shape ``(n, *trailing_shape)``.

    IDX header: a big-endian int32 magic number (2051 images, 2049 labels), then one int32 per
    dimension. Raises :class:`DataError` naming the file on any mismatch or truncation.
    """
    raw = read_bytes(path)
    ndim = 1 + len(trailing_shape)
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise DataError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
    got_magic, *dims = struct.unpack(f">{1 + ndim}i", raw[:header_size])
    if got_magic != magic:
        raise DataError(f"{path}: IDX magic number {got_magic}, expected {magic}")
    if tuple(dims[1:]) != trailing_shape:
        raise DataError(f"{path}: IDX shape {tuple(dims)}, expected (n, {trailing_shape})")
    expected = header_size + dims[0] * int(torch.tensor(trailing_shape).prod())
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes after decompression, expected {expected}")
    data = torch.frombuffer(bytearray(raw[header_size:]), dtype=torch.uint8)
    return data.view(dims[0], *trailing_shape)


class MNISTDataModule(InMemoryDataModule):
    """MNIST: 55k/5k train/val split of the 60k training images (seeded), 10k test images.

    The training order each epoch is drawn from ``shuffle_seed + epoch`` (None: a seed drawn once
    and kept in checkpoints); see :class:`~datamodules.samplers.EpochShuffle`.
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 128,
        eval_batch_size: PositiveInt = 1000,
        binarize: Literal["dynamic", "static", "none"] = "dynamic",
        val_size: Annotated[int, Interval(ge=1, lt=60_000)] = 5000,
        split_seed: Seed = 0,
        eval_binarize_seed: Seed = 0,
        shuffle_seed: Seed | None = 0,
        download: bool = True,
        mirrors: list[str] | tuple[str, ...] = MNIST_MIRRORS,
        data_on_device: bool = True,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        try:
            binarize = Binarize(binarize).value
        except ValueError:
            options = ", ".join(b.value for b in Binarize)
            raise ConfigError(f"data.binarize={binarize!r} is not one of: {options}") from None
        self.save_hyperparameters()
        self.raw_dir = Path(data_dir) / "MNIST" / "raw"
        self.splits: dict[str, IndexedTensors] = {}
        self.split_indices: dict[str, torch.Tensor] = {}

    def prepare_data(self) -> None:
        """Download the IDX files that are missing, verifying checksums (safe in every DDP
        process at once: one downloads, the others wait; :mod:`datamodules.files`)."""
        self._fetch(self.hparams.download)

    def _fetch(self, download: bool) -> None:
        root = self.raw_dir.parent.parent
        fetch_missing(self.raw_dir, MNIST_FILES, self.hparams.mirrors, download, "MNIST", root=root)

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The 60k training or 10k test images ``(n, 28, 28)`` and labels ``(n,)``, uint8."""
        prefix = "train" if train else "t10k"
        self._fetch(False)
        images = read_idx(
            self.raw_dir / f"{prefix}-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, (28, 28)
        )
        labels = read_idx(self.raw_dir / f"{prefix}-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, ())
        if len(images) != len(labels):
            raise DataError(
                f"{self.raw_dir}: {len(images)} {prefix} images but {len(labels)} labels"
            )
        return images, labels

    def setup(self, stage: str | None = None) -> None:
        """The three splits, decoded once and then read from the cache (``datamodules.files``:
        keyed by the IDX files' sizes and times and by every setting the splits depend on)."""
        if self.splits:
            return
        hp = self.hparams
        self._fetch(False)
        files = [self.raw_dir / name for name in MNIST_FILES]
        key = {"version": CACHE_VERSION, "files": file_stamp(*files), "val_size": hp.val_size,
               "split_seed": hp.split_seed, "binarize": hp.binarize,
               "eval_binarize_seed": hp.eval_binarize_seed}  # fmt: skip
        decoded = cached_tensors("mnist", key, self._decode)
        self.split_indices = {split: decoded[f"{split}_index"] for split in ("train", "val")}
        self.splits = {
            split: IndexedTensors(decoded[f"{split}_images"], decoded[f"{split}_labels"])
            for split in ("train", "val", "test")
        }

    def _decode(self) -> dict[str, torch.Tensor]:
        """Read the IDX files, split the 60k training images (seeded) and fix the pixels that are
        fixed at setup time: the tensors of :meth:`setup`, by name."""
        hp = self.hparams
        images, labels = self.load_split(train=True)
        if not 0 < hp.val_size < len(images):
            raise ConfigError(f"data.val_size={hp.val_size} must be in (0, {len(images)})")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(hp.split_seed))
        val_idx, train_idx = order[: hp.val_size], order[hp.val_size :]
        test_images, test_labels = self.load_split(train=False)
        fixed = torch.Generator().manual_seed(hp.eval_binarize_seed)
        return {
            "train_index": train_idx,  # into the 60k training file
            "val_index": val_idx,
            "train_images": self._fixed_pixels(images[train_idx], None),
            "train_labels": labels[train_idx],
            "val_images": self._fixed_pixels(images[val_idx], fixed),
            "val_labels": labels[val_idx],
            "test_images": self._fixed_pixels(test_images, fixed),
            "test_labels": test_labels,
        }

    def _fixed_pixels(
        self, images: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Apply the binarisation that is fixed at setup time; values stay uint8 in [0, 255].

        ``static`` thresholds every split; ``dynamic`` samples val/test once (``generator``) and
        leaves the training split grey for per-batch resampling; ``none`` keeps grey levels.
        """
        mode = Binarize(self.hparams.binarize)
        if mode is Binarize.STATIC:
            return (images > 127).to(torch.uint8) * 255
        if mode is Binarize.DYNAMIC and generator is not None:
            return torch.bernoulli(images.float() / 255, generator=generator).to(torch.uint8) * 255
        return images

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, 28, 28)`` -> float ``(B, 1, 28, 28)`` in [0, 1], resampled when dynamic."""
        images, labels = batch
        x = images.unsqueeze(1).float().div_(255)
        training = self.trainer is not None and self.trainer.training
        if training and self.hparams.binarize == Binarize.DYNAMIC.value:
            x = torch.bernoulli(x)
        return x, labels
