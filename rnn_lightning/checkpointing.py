"""Checkpointing that survives a kill: the best model by the monitored loss, and ``last.ckpt`` every epoch,
each written to a temporary file and renamed into place, so a crash mid-save never leaves only a torn file."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor


@torch.no_grad()
def _validate_untrained(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Tensor]:
    """The validation metrics of the model as it is now, through its own ``validation_step``.

    Each DDP rank runs its shard of the validation data; the metrics' ``compute()`` sums across ranks.
    """
    was_training = pl_module.training
    pl_module.eval()
    try:
        for batch_idx, batch in enumerate(trainer.datamodule.val_dataloader()):
            pl_module.validation_step(trainer.strategy.batch_to_device(batch), batch_idx)
    finally:
        pl_module.train(was_training)
    results = {}
    for name, metric in pl_module.head.epoch_metrics("val").items():
        results[name] = metric.compute()
        metric.reset()
    return results


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that picks its monitor from the data and refreshes ``last.ckpt`` every epoch.

    ``monitor="auto"`` watches ``val_loss`` when the data module holds out validation data and
    ``train_loss`` when it does not (``val_size: 0``, the tutorial's split). Lightning's own
    ``save_last`` only rewrites ``last.ckpt`` in epochs where the best checkpoint improved; resuming
    after a crash should lose at most one epoch, so this callback rewrites it at the end of every epoch.
    """

    def __init__(self, monitor: str | None = "auto", include_initial: bool = False, **kwargs) -> None:
        """Args:
            monitor: The logged value that decides the best checkpoint; ``auto`` as described above.
            include_initial: Validate the model before its first training step and let that untrained
                model compete for "best". A model that starts as a baseline (``zero_init_head`` on a
                return target starts as the persistence forecast) then never ends worse than that
                baseline on validation data, whatever training does.
            **kwargs: Lightning's ``ModelCheckpoint`` arguments.
        """
        kwargs.setdefault("save_last", True)
        super().__init__(monitor=monitor, **kwargs)
        self.include_initial = include_initial

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.monitor == "auto":
            has_validation = getattr(trainer.datamodule, "has_validation", True)
            self.monitor = "val_loss" if has_validation else "train_loss"
        super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if not self.include_initial or trainer.global_step > 0 or trainer.fast_dev_run:
            return  # not asked for, resumed, or a smoke test
        if self.monitor != "val_loss" or not trainer.num_val_batches:
            return
        candidates = _validate_untrained(trainer, pl_module)
        # Saved as epoch 0, step 0: the first epoch's checkpoint replaces it only if validation improves.
        candidates.update(epoch=torch.tensor(0), step=torch.tensor(0))
        self._save_topk_checkpoint(trainer, candidates)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Nothing saved at this step means the monitored value did not improve; keep last.ckpt fresh.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        directory, name = os.path.split(filepath)
        partial = os.path.join(directory, f".{name}.partial")
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(partial, filepath)  # atomic on POSIX: readers see the old or the new file
            # Flush the logs with every checkpoint, so a killed run's curves reach as far as its last.ckpt.
            for logger in trainer.loggers:
                logger.save()
        self._last_checkpoint_saved = filepath
