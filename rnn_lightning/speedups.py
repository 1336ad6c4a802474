"""Every change rnn-lightning makes to Lightning's or torch's default behaviour for speed, in one place.

No switch lives here: each speed-up is applied where it is asked for, from plain arguments.

* The process-wide ones (``allocator``, ``nvml_check``): :func:`apply_process`, called once by the CLI
  before any data is read.
* The per-trainer one (``paced_progress_bar``): :func:`pace_progress_bar`, once the Trainer exists.
* The ones that change a model (``fused_adam``, ``fast_hook_name``, ``parallel_directions``): arguments of
  :class:`~rnn_lightning.models.module.RecurrentModel`, so ``--print_config`` and each run's
  ``config.yaml`` show them; :data:`MODEL_OFF` is what ``--speedups false`` writes into ``model.*``.

``--speedups false`` (or the environment variable ``RNN_LIGHTNING_SPEEDUPS=0``, read by
:func:`switch_allowed`) turns all of them off together, for a plain-Lightning baseline or to rule them
out when something looks wrong. ``docs/performance.md`` lists each one with the gain
``benchmarks/bench_speed.py`` measured, and ``tests/test_speedups.py`` checks that each is still in
effect on the installed Lightning and torch, so a release that breaks one fails CI instead of silently
losing it.

======================  =========================================================================
``allocator``           glibc keeps freed blocks below 32 MiB (``mallopt``): no page faults per step
``nvml_check``          no NVML reload at every ``torch.cuda.is_available()`` on a machine without CUDA
``paced_progress_bar``  the default TQDM bar redraws by the clock (0.1 s), not twice per batch
``fast_hook_name``      (model argument) Lightning's per-hook ``_current_fx_name`` skips
                        ``nn.Module.__setattr__``
``fused_adam``          (model argument) Adam's fused kernel on CPU and CUDA (torch's default is foreach)
``parallel_directions`` (model argument, off by default) a bidirectional layer's two directions on two
                        CPU threads
======================  =========================================================================
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import time
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from rnn_lightning.errors import UserInputError

ENV_SWITCH = "RNN_LIGHTNING_SPEEDUPS"
ENV_OFF = ("0", "false", "no", "off")

# The RecurrentModel arguments that ``--speedups false`` sets, on top of the model's own config.
MODEL_OFF: dict[str, bool] = {"fused_adam": False, "fast_hook_name": False, "parallel_directions": False}


def switch_allowed(requested: bool = True) -> bool:
    """Whether the speed-ups are on: ``requested`` (``--speedups``) unless ``RNN_LIGHTNING_SPEEDUPS`` says off."""
    return bool(requested) and os.environ.get(ENV_SWITCH, "1").strip().lower() not in ENV_OFF


def apply_process(enabled: bool) -> dict[str, bool]:
    """Apply the process-wide speed-ups when ``enabled``, before any data is read; returns which took effect.

    The per-trainer one is :func:`pace_progress_bar`; the model's are :class:`RecurrentModel` arguments.
    """
    if not enabled:
        return {"allocator": False, "nvml_check": False}
    return {"allocator": keep_freed_memory(), "nvml_check": skip_nvml_check()}


# --- allocator ------------------------------------------------------------------------------------------
# Every training step allocates and frees the same few blocks of a few hundred kB to a few MB
# (activations, oneDNN's RNN workspaces, their gradients). glibc serves blocks above its mmap threshold
# (128 KiB at start) with a fresh mmap and unmaps them on free, and trims its heap tops, so the next step
# faults brand-new pages in again, and on the Bi-LSTM the page faults' system time is a large share of an
# epoch (docs/performance.md has the counts and seconds). Blocks up to 32 MiB are kept instead. The cost:
# up to 64 MiB of freed memory stays with the process. MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set
# by the user win; where there is no glibc (macOS, musl) nothing changes.

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 32 * 2**20  # glibc's own ceiling for its self-adjusting mmap threshold (64-bit)
MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Serve blocks below 32 MiB from the heap and trim it only past 64 MiB; True when glibc took it."""
    if any(name in os.environ for name in MALLOC_ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt accepts and ignores)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * KEEP_BELOW))


# --- nvml_check -----------------------------------------------------------------------------------------
NVML_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_nvml_check() -> bool:
    """Drop Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` where there is no CUDA device.

    With it, every ``torch.cuda.is_available()`` (Adam asks at each step) tries to load NVML again
    until CUDA is initialised, a cost paid at every step (docs/performance.md); without NVML torch asks
    the CUDA runtime anyway.
    """
    if torch.cuda.is_available():
        return False
    return os.environ.pop(NVML_ENV, None) is not None


# --- paced_progress_bar ---------------------------------------------------------------------------------


class PacedProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, redrawn at most every ``min_interval`` seconds and at the last batch.

    Lightning's bar redraws twice after every batch and fetches the progress-bar metrics each time:
    a measurable share of a row-MNIST Bi-LSTM epoch of many short batches (docs/performance.md), writing
    text nobody can read that fast.
    Only public hooks are overridden: a batch-end call is passed on to Lightning's bar when it is due.

    Args:
        min_interval: Seconds between redraws (tqdm's own default is 0.1); 0 redraws after every batch.
        process_position: As :class:`TQDMProgressBar`.
        leave: As :class:`TQDMProgressBar`.
    """

    def __init__(self, min_interval: float = 0.1, process_position: int = 0, leave: bool = False) -> None:
        if not min_interval >= 0:  # also refuses NaN
            raise UserInputError(f"progress bar min_interval must be >= 0 seconds, got {min_interval}")
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self._last_draw = -math.inf
        self.draws = 0  # batch-end redraws passed on to Lightning's bar (read by the tests)

    def _due(self, batch_idx: int, total: int | float | None) -> bool:
        now = time.monotonic()
        if batch_idx + 1 == total or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self.draws += 1
            return True
        return False

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._due(batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._due(batch_idx, self.total_predict_batches_current_dataloader):
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


def pace_progress_bar(trainer: Trainer, configured_callbacks: list[Any], enabled: bool) -> bool:
    """Swap the TQDM bar Lightning adds by default for :class:`PacedProgressBar` when ``enabled``; True when swapped.

    A progress bar among the user's ``trainer.callbacks`` is kept as given, and
    ``enable_progress_bar: false`` leaves no bar to swap, exactly as with Lightning alone. Other
    callbacks given on the command line (``--trainer.callbacks+=...``) do not matter.
    """
    bar = trainer.progress_bar_callback
    if not enabled or type(bar) is not TQDMProgressBar:
        return False
    if any(isinstance(c, ProgressBar) for c in configured_callbacks):
        return False
    trainer.callbacks[trainer.callbacks.index(bar)] = PacedProgressBar()
    return True


# --- fast_hook_name -------------------------------------------------------------------------------------
# Lightning sets the plain string ``LightningModule._current_fx_name`` twice around every hook call, about
# 50 times a training step; nn.Module.__setattr__'s parameter/module/buffer checks then show in a KOSPI
# fit of thousands of tiny steps. No public API sets it: the name is Lightning's; docs/performance.md lists
# it and what skipping the checks saves.
HOOK_NAME = "_current_fx_name"
FAST_HOOK_ATTRIBUTE = "fast_hook_name"  # the instance attribute (a RecurrentModel argument) that turns it on


class FastHookName:
    """Mixin for a LightningModule: ``self._current_fx_name = ...`` skips ``nn.Module.__setattr__``.

    Only while the instance's ``fast_hook_name`` attribute is true; off while it is missing (early in
    ``__init__``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == HOOK_NAME and self.__dict__.get(FAST_HOOK_ATTRIBUTE, False):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


# --- fused_adam -----------------------------------------------------------------------------------------


def adam_fused(device: torch.device, fused_adam: bool) -> bool | None:
    """The ``fused`` argument for ``torch.optim.Adam``: True when asked for and the device has the kernel.

    None is torch's default (foreach). The fused kernel updates each parameter in one call instead of a
    dozen small ops, which matters for the tiny KOSPI models on a CPU (docs/performance.md).
    """
    return True if fused_adam and device.type in ("cpu", "cuda") else None
