"""What both data modules share: argument checks, rank-aware in-memory loaders, task sizes for the model."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor

from rnn_lightning.data.batches import BatchTransform, InMemoryBatches
from rnn_lightning.errors import UserInputError


def check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}")


def resolve_count(name: str, value: int | float, total: int, allow_zero: bool = True) -> int:
    """Turn an int count or a float fraction of ``total`` into a count, with a one-line error when invalid."""
    if isinstance(value, bool):
        raise UserInputError(f"{name} must be an int count or a fraction in (0, 1), got {value!r}")
    if isinstance(value, float):
        if not 0.0 < value < 1.0:
            if value == 0.0 and allow_zero:
                return 0
            raise UserInputError(f"{name} as a fraction must lie in (0, 1), got {value}")
        return int(round(value * total))
    if value < 0 or (value == 0 and not allow_zero):
        raise UserInputError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}")
    if value > total:
        raise UserInputError(f"{name}={value} is larger than the {total} available")
    return value


class InMemoryDataModule(pl.LightningDataModule):
    """Base for data modules whose whole data set fits in memory as tensors.

    Subclasses describe the task through ``task``, ``input_size``, ``sequence_length`` and
    ``num_outputs``; the CLI links those into the model, so no config states them twice.
    """

    task: str = "regression"

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        check_positive("batch_size", batch_size)
        self.batch_size = batch_size

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def sequence_length(self) -> int:
        raise NotImplementedError

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    @property
    def has_validation(self) -> bool:
        raise NotImplementedError

    def _distributed(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(
        self,
        tensors: Sequence[Tensor],
        shuffle: bool = False,
        shard: bool = True,
        transform: BatchTransform | None = None,
    ) -> InMemoryBatches:
        """Batches over ``tensors``; sharded across DDP ranks unless ``shard`` is false (predict)."""
        rank, world_size = self._distributed() if shard else (0, 1)
        seed = torch.initial_seed() % 2**31
        if shuffle and world_size > 1:
            # The ranks' permutations must agree or their shards overlap. ``seed_everything`` gives every
            # rank the same global seed; without it (``seed_everything: false``) each process has its own,
            # so rank 0's decides. Every rank asks for its loaders at the same point: the collective is safe.
            seed = self.trainer.strategy.broadcast(seed, src=0)
        return InMemoryBatches(
            tensors,
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
            transform=transform,
            epoch_fn=(lambda: self.trainer.current_epoch) if self.trainer is not None else None,
        )
