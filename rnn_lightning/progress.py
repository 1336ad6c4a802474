"""The progress bar the CLI uses: Lightning's TQDM bar, redrawn by the clock instead of after every batch.

Lightning's default bar redraws itself twice after every training batch (the count, then the metrics),
and fetches the progress-bar metrics each time. With the row-MNIST Bi-LSTM's 469 batches of ~10 ms that
is about 5% of an epoch (``benchmarks/bench_speed.py``), spent writing text nobody can read that fast.
This bar keeps Lightning's look and hooks and redraws at most every ``min_interval`` seconds, and always
at the last batch of a loop, so every bar still ends at its full count.
"""

from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import TQDMProgressBar

from rnn_lightning.errors import UserInputError


class PacedProgressBar(TQDMProgressBar):
    """:class:`TQDMProgressBar` that redraws at most every ``min_interval`` seconds.

    Args:
        min_interval: Seconds between redraws (tqdm's own default is 0.1); 0 redraws after every batch,
            as Lightning's bar does.
        process_position: As :class:`TQDMProgressBar`.
        leave: As :class:`TQDMProgressBar`.
    """

    def __init__(self, min_interval: float = 0.1, process_position: int = 0, leave: bool = False) -> None:
        if not min_interval >= 0:  # also refuses NaN
            raise UserInputError(f"progress bar min_interval must be >= 0 seconds, got {min_interval}")
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self._last_draw = -math.inf

    def _should_update(self, current: int, total: int | float) -> bool:
        # Every per-batch hook of Lightning's bar (train, validation, test, predict) asks this first.
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current == total or now - self._last_draw >= self.min_interval:
            self._last_draw = now
            return True
        return False
