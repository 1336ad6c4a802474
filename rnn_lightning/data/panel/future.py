"""What ``predict`` adds after a panel's test windows: the panel extended by the steps nobody has seen yet.

:func:`future_panel` joins each series' test part to its history and appends ``horizon`` unknown (NaN)
steps; :class:`ChainedBatches` runs the test batches, then those future ones, as one predict loader.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from rnn_lightning.data.panel.batches import PanelBatches, PanelWindows
from rnn_lightning.data.panel.core import Panel, ragged_arange


class ChainedBatches:
    """The batches of several :class:`PanelBatches` one after the other (predict: test, then future)."""

    def __init__(self, *parts: PanelBatches) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[PanelWindows]:
        for part in self.parts:
            yield from part


def future_panel(panel: Panel, horizon: int) -> Panel:
    """``panel`` with its test part joined to its history and ``horizon`` unknown (NaN) steps after each series.

    Its default split (no validation) then has one test window per series: the forecast from each series'
    last observation, the ``horizon`` steps nobody has seen yet. A panel of row timestamps (trading days)
    gets business days after its last row.
    """
    n = panel.n_series
    lengths = panel.lengths + panel.test_lengths
    offsets = np.concatenate([[0], np.cumsum(lengths + horizon)]).astype(np.int64)
    values = np.full(int(offsets[-1]), np.nan, dtype=np.float32)
    known = ragged_arange(panel.lengths) + np.repeat(offsets[:-1], panel.lengths)
    values[known] = panel.values
    if panel.test_values is not None:
        tail = ragged_arange(panel.test_lengths) + np.repeat(offsets[:-1] + panel.lengths, panel.test_lengths)
        values[tail] = panel.test_values
    past = None
    if panel.past is not None:
        past = np.zeros((len(values), panel.n_past), dtype=np.float32)  # never read: inputs end at the origin
        past[known] = panel.past
    timestamps = None
    if panel.timestamps is not None:
        timestamps = np.empty(len(values), dtype="datetime64[ns]")
        timestamps[known] = panel.timestamps
        last = panel.timestamps[panel.offsets[1:] - 1]
        for i in range(n):  # one date_range per series, not per step
            days = pd.bdate_range(pd.Timestamp(last[i]), periods=horizon + 1)[1:].to_numpy()
            timestamps[offsets[i + 1] - horizon : offsets[i + 1]] = days
    return Panel(
        ids=panel.ids,
        values=values,
        offsets=offsets,
        starts=panel.starts,
        freq=panel.freq,
        past=past,
        past_names=panel.past_names,
        static=panel.static,
        static_names=panel.static_names,
        timestamps=timestamps,
        season_length=panel.season_length,
        horizon=panel.horizon,
        nominal_starts=panel.nominal_starts,
        source=panel.source,
    )
