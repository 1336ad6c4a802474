"""Checkpoints that survive a kill, on ModelCheckpoint's public behaviour.

The CLI adds two checkpoint callbacks, both visible in ``--print_config`` and the saved ``config.yaml``:

* ``checkpoint``: :class:`BestCheckpoint`, Lightning's ``ModelCheckpoint`` keeping the best model by the
  monitored loss (``monitor: auto`` picks ``val_loss`` or ``train_loss`` from the data module);
* ``last_checkpoint``: a plain ``ModelCheckpoint(monitor=None, filename="last",
  save_on_train_epoch_end=True, enable_version_counter=False)`` that rewrites ``last.ckpt`` at the end of
  every epoch, so a resume after a crash loses at most one epoch (``save_last`` rewrites it only in
  epochs where the best checkpoint improves).

Every local file is written by :class:`AtomicCheckpointIO`, the Trainer's checkpoint-IO plugin
(``trainer.plugins`` in the CLI's defaults): a temporary file renamed into place, so a kill mid-save
leaves the previous file, never a torn one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import IO, Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint


def _is_local(path: Any) -> bool:
    """A plain path or a ``file://`` URL, as opposed to ``s3://``, ``gs://`` and other fsspec URLs."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return "://" not in text or text.startswith("file://")


def partial_path(path: str | os.PathLike) -> str:
    """The hidden temporary file beside ``path`` that a write fills before it is renamed to ``path``."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f".{name}.partial")


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Run ``write`` on a hidden temporary file beside ``path``, then rename it to ``path``.

    Readers, and a resume after the process was killed at any moment, see either the previous file or the
    complete new one, never a torn one: the rename is atomic on POSIX. There is no fsync, as in Lightning's
    own writer: a KOSPI fit saves after every short epoch, where an fsync is a measurable cost
    (docs/performance.md), and ext4 already orders a file replaced by rename (auto_da_alloc); on other file
    systems a power cut may lose the latest file.
    """
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    partial = partial_path(path)
    with open(partial, "wb") as handle:
        write(handle)
    os.replace(partial, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with local files written by :func:`write_atomically`.

    The serialized bytes go to the temporary file in one plain write (Lightning's writer copies them out
    through an fsspec transaction, a measurable part of each save: docs/performance.md). Remote
    URLs (``s3://`` ...) keep Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = os.fspath(path).removeprefix("file://")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # many small writes: into memory, then one write to the file
        write_atomically(path, lambda handle: handle.write(buffer.getbuffer()))


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for the best model, with its monitor chosen from the data.

    Args:
        monitor: The logged value that decides the best checkpoint. ``auto`` watches ``val_loss`` when
            the data module holds out validation data (its ``has_validation``) and ``train_loss`` when
            it does not (``val_size: 0``, the tutorial's split).
        include_initial: Validate the model before its first training step and let that untrained model
            compete for "best". :func:`rnn_lightning.runs.fit` does this through ``Trainer.validate`` for every
            run the project builds: the CLI's, backtest folds, tune trials and the Python API's. A model that
            starts as a baseline (``zero_init_head`` on a return target starts as the persistence
            forecast) then never ends worse than that baseline on validation data.
        **kwargs: Lightning's ``ModelCheckpoint`` arguments.

    With ``check_val_every_n_epoch > 1`` Lightning skips validation in a final epoch that is not a
    multiple, and a run shorter than the period never validates, so it would have no best checkpoint:
    the final epoch of a fit always validates here (the Trainer's setting is restored when the fit ends).
    """

    monitor: str | None

    def __init__(self, monitor: str | None = "auto", include_initial: bool = False, **kwargs: Any) -> None:
        super().__init__(monitor=monitor, **kwargs)
        self.include_initial = include_initial
        self._every_n_val: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.monitor == "auto":
            has_validation = getattr(trainer.datamodule, "has_validation", True)
            self.monitor = "val_loss" if has_validation else "train_loss"
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        every = trainer.check_val_every_n_epoch
        if every and every > 1 and self.monitor == "val_loss" and trainer.current_epoch + 1 == trainer.max_epochs:
            self._every_n_val = every
            trainer.check_val_every_n_epoch = 1

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._every_n_val is not None:
            trainer.check_val_every_n_epoch, self._every_n_val = self._every_n_val, None

    def adopt(self, filepath: str, score: torch.Tensor) -> None:
        """Enter an already saved checkpoint as the best so far, through the public top-k attributes.

        A later epoch replaces it (and deletes its file) only if it scores better.
        """
        self.best_k_models = {filepath: score}
        self.kth_best_model_path = self.best_model_path = filepath
        self.kth_value = self.best_model_score = score


def last_checkpoint_defaults() -> dict[str, Any]:
    """Defaults of the CLI's ``last_checkpoint`` group: ``last.ckpt`` rewritten after every epoch."""
    return {
        "last_checkpoint.monitor": None,
        "last_checkpoint.filename": "last",
        "last_checkpoint.save_top_k": 1,
        "last_checkpoint.save_on_train_epoch_end": True,
        "last_checkpoint.enable_version_counter": False,
    }
