"""What both data modules share: argument checks, rank-aware in-memory loaders, task sizes for the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import torch
from torch import Tensor

from rnn_lightning.data.batches import BatchTransform, InMemoryBatches
from rnn_lightning.errors import check_positive


@runtime_checkable
class TakesFitted(Protocol):
    """A model that takes what a data module fitted on its training rows (scaling, the naive moves)."""

    def take_fitted(
        self, stage: str, scaling: Callable[[], dict[str, Any] | None], moves: Callable[[], Tensor | None]
    ) -> None: ...


class InMemoryDataModule(pl.LightningDataModule):
    """Base for data modules whose whole data set fits in memory as tensors.

    Subclasses name their data kind (``kind``: what the workflows learn of the data, see
    :mod:`rnn_lightning.kinds`) and describe the sizes through ``input_size``, ``sequence_length``,
    ``num_outputs`` and ``scaling_spec``; the run factory links those (and the kind's task) into the
    model, so no config states them twice. A data module whose inputs need fitted scaling also offers
    ``fitted_scaling()``, which the model takes when fitting starts.
    """

    kind: str  # the name of its data kind (rnn_lightning.kinds), which says what the workflows need

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

    @property
    def scaling_spec(self) -> dict[str, Any] | None:
        """How the model scales this data's raw inputs and outputs (see :mod:`rnn_lightning.models.scaling`)."""
        return None

    def fitted_scaling(self) -> dict[str, Any] | None:
        """The model's scaling, fitted on this data's training rows (None: nothing to fit)."""
        return None

    def training_moves(self) -> Tensor | None:
        """The training windows' moves the distribution heads' naive forecast is fitted on (None: none)."""
        return None

    def fingerprint(self) -> bytes:
        """The read data as bytes, for a signature that changes when the data does (a tune study's)."""
        raise NotImplementedError(f"{type(self).__name__} does not say what its data is (fingerprint)")

    def hand_fitted(self, stage: str | None) -> None:
        """Hand the model of the running Trainer what this data fitted on its training rows.

        Called at the end of ``setup``: Lightning sets the data module up right before the model, and a
        checkpoint a fit resumes from (restored after both) brings the same values. The model decides
        what to take (:meth:`RecurrentModel.take_fitted`); the values are computed only if it does.
        """
        model = self.trainer.lightning_module if self.trainer is not None else None
        if stage is not None and isinstance(model, TakesFitted):
            model.take_fitted(stage, self.fitted_scaling, self.training_moves)

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
        batch_type: Callable[..., Any] | None = None,
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
            batch_type=batch_type,
            epoch_fn=(lambda: self.trainer.current_epoch) if self.trainer is not None else None,
        )
