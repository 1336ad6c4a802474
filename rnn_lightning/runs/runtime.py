"""Process-wide settings, applied once per process, and the warning and logging filters around Trainer calls."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from functools import cache

import torch

from rnn_lightning import speedups
from rnn_lightning.runs.config import RunConfig

# Lightning's warnings that say nothing a user of these runs can act on; filtered around each Trainer call
# only (:func:`quiet_warnings`), never process-wide.
EXPECTED_WARNINGS = (
    # Batches are tensors already in memory: no DataLoader workers to suggest.
    ".*does not have many workers.*",
    # Lightning's own use of a torch API that torch deprecated.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # val_size: 0 means no validation batches, on purpose.
    "Total length of `list` across ranks is zero",
    # Metrics are logged per epoch, which a long step interval (the KOSPI configs') does not delay.
    "The number of training batches .* is smaller than the logging interval",
    # A resumed fit or an include_initial checkpoint puts files into the folder on purpose.
    "Checkpoint directory .* exists and is not empty",
    # predictions.csv matches rows to dates by order: in-memory batches carry no indices to infer.
    "Couldn't infer the batch indices",
)


# --- process-wide settings, once ------------------------------------------------------------------------


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger/litmodels" lines; every other message stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def prepare_process(config: RunConfig) -> RunConfig:
    """Apply the process-wide settings a config asks for, before any data is read; returns the config to build.

    Threads (``num_threads``), the process-wide speed-ups (allocator, NVML check) and the filter that drops
    Lightning's advertisements. ``speedups: false`` (or ``RNN_LIGHTNING_SPEEDUPS=0``) also turns the model's
    speed-up arguments off (:data:`rnn_lightning.speedups.MODEL_OFF`), in the returned config, where the saved
    ``config.yaml`` shows them.
    """
    enabled = speedups.switch_allowed(bool(config.get("speedups", True)))
    apply_process_settings(enabled, config.get("num_threads"))
    if enabled:
        return config
    values = config.namespace.clone()
    for key, value in speedups.MODEL_OFF.items():
        values[f"model.{key}"] = value
    values["speedups"] = False
    return RunConfig(values)


def apply_process_settings(speedups_enabled: bool, threads: int | None) -> None:
    """The process-wide part of :func:`prepare_process`: what is set already is not set again.

    A second run with the same settings in one process (a notebook calling ``api.fit`` twice, a search's
    trials) changes nothing global: the allocator and Lightning's advertisement filter are applied once
    per process (:func:`_apply_once`), and the thread count only when it differs from torch's.
    """
    _apply_once(speedups_enabled)
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@cache
def _apply_once(speedups_enabled: bool) -> None:
    speedups.apply_process(speedups_enabled)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisement) for f in logger.filters):
        logger.addFilter(_NoAdvertisement())


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """:data:`EXPECTED_WARNINGS` filtered for the duration of one Trainer call; the process's filters stay."""
    with warnings.catch_warnings():
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's per-Trainer info lines (GPU available, max_epochs reached ...) off, for workflows of many fits."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
