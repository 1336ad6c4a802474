"""In-memory batch iteration: slices of tensors that already live in memory, rank-aware under DDP.

A ``DataLoader`` over a ``TensorDataset`` indexes one sample at a time and collates them again; for a
few hundred KOSPI windows or 60,000 uint8 images that bookkeeping costs more than the recurrent
network itself. :class:`InMemoryBatches` gathers each batch with one advanced-indexing call instead.

Under DDP every rank draws the same seeded permutation of the epoch and takes a disjoint, interleaved
shard of it. Every rank yields the same number of batches (a rank's last batch may hold one sample
more), so collective operations never wait on a rank that ran out of data, and no sample is
duplicated or dropped: the shards are disjoint and together cover the epoch exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from rnn_lightning.errors import UserInputError


class PriceWindows(NamedTuple):
    """A batch of daily-price windows, in the CSV's units (the model scales them itself).

    Fields: ``x`` (B, T, F) float64 raw feature windows; ``ref`` (B,) float64, each window's last known
    close (the anchor of the target transform and the naive forecast); ``close`` (B,) float64, the close
    to predict (NaN where it is not known yet: tomorrow's forecast).
    """

    x: Tensor
    ref: Tensor
    close: Tensor


class Images(NamedTuple):
    """A batch of row-sequence images: ``x`` (B, 28, 28) uint8 pixels and ``y`` (B,) int64 labels."""

    x: Tensor
    y: Tensor


BatchTransform = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]


class InMemoryBatches:
    """Iterate over aligned tensors in batches, optionally shuffled and sharded across ranks.

    Args:
        tensors: Tensors with the same first dimension (samples).
        batch_size: Samples per batch on each rank.
        shuffle: Draw a new permutation every epoch (seeded by ``seed`` and the epoch number).
        seed: Base seed of the permutation; identical on every rank, so shards never overlap.
        rank: This process's rank among ``world_size`` (0 and 1 without DDP).
        world_size: Number of ranks that share the data.
        transform: Applied to each gathered batch.
        batch_type: Builds each batch from its tensors (a NamedTuple class such as :class:`PriceWindows`);
            plain tuples without it.
        epoch_fn: Returns the current epoch (e.g. the Trainer's), so that every epoch, and a resumed
            epoch, draws its own reproducible permutation. Without it, each pass counts as a new epoch.
    """

    def __init__(
        self,
        tensors: Sequence[Tensor],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        transform: BatchTransform | None = None,
        epoch_fn: Callable[[], int] | None = None,
        batch_type: Callable[..., Any] | None = None,
    ) -> None:
        if not tensors:
            raise ValueError("InMemoryBatches needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same number of samples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if n < world_size:
            # A user's choice (a small split, many devices), so a one-line UserInputError.
            raise UserInputError(
                f"a split of {n} samples cannot give each of {world_size} devices one; "
                "enlarge the split (split / val_size) or use fewer devices"
            )
        self.tensors = tuple(tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.transform = transform
        self.epoch_fn = epoch_fn
        self.batch_type = batch_type
        self._passes = 0

    @property
    def num_samples(self) -> int:
        return len(self.tensors[0])

    @property
    def epoch(self) -> int:
        return self.epoch_fn() if self.epoch_fn is not None else self._passes

    def __len__(self) -> int:
        # The shortest shard decides, so that every rank yields the same number of batches.
        return max(1, math.ceil((self.num_samples // self.world_size) / self.batch_size))

    def shard_indices(self) -> Tensor:
        """Indices of the samples this rank sees in the current epoch, in the order it sees them."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Any]:
        index = self.shard_indices()
        num_batches = len(self)
        bounds = [i * self.batch_size for i in range(num_batches)] + [len(index)]
        # Contiguous slices need no gather when the order is the identity and there is one rank.
        contiguous = not self.shuffle and self.world_size == 1
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            if contiguous:
                batch = tuple(t[start:stop] for t in self.tensors)
            else:
                rows = index[start:stop]
                # index_select copies whole rows; t[rows] (advanced indexing) copies element by element,
                # much slower for a batch of images (docs/performance.md).
                batch = tuple(t.index_select(0, rows) for t in self.tensors)
            if self.transform is not None:
                batch = self.transform(batch)
            yield self.batch_type(*batch) if self.batch_type is not None else batch
        self._passes += 1
