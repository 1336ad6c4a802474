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
from rnn_lightning.data.panel.windows import panel_layout


class ChainedBatches:
    """The batches of several :class:`PanelBatches` one after the other (predict: test, then future)."""

    def __init__(self, *parts: PanelBatches) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[PanelWindows]:
        for part in self.parts:
            yield from part


def future_panel(panel: Panel, horizon: int, keep: int | None = None) -> Panel:
    """``panel`` with its test part joined to its history and ``horizon`` unknown (NaN) steps after each series.

    Its default split (no validation) then has one test window per series: the forecast from each series'
    last observation, the ``horizon`` steps nobody has seen yet. A panel of row timestamps (trading days)
    gets business days after its last row.

    Args:
        panel: The panel.
        horizon: The unknown steps appended to each series.
        keep: Keep only each series' last ``keep`` known steps (all when it has fewer; None: all). A
            forecast from the last observation reads its input window, the steps of its seasonal naive
            forecast and its last value, so the data module keeps input length + horizon + season: a
            copy of a few dozen steps per series instead of every value of a large panel. The kept
            part's first timestamp is the series' start, so its calendar is unchanged.
    """
    layout = panel_layout(panel)  # training and shipped test parts, joined
    start, end = layout.offsets[:-1], layout.offsets[1:]
    kept = end - start if keep is None else np.minimum(end - start, keep)
    first = end - kept  # each series' first kept position in the layout
    offsets = np.concatenate([[0], np.cumsum(kept + horizon)]).astype(np.int64)
    values = np.full(int(offsets[-1]), np.nan, dtype=np.float32)
    steps = ragged_arange(kept)
    source = steps + np.repeat(first, kept)
    target = steps + np.repeat(offsets[:-1], kept)
    del steps
    values[target] = layout.values[source]
    past = None
    if layout.past is not None:
        past = np.zeros((len(values), layout.past.shape[1]), dtype=np.float32)  # never read: inputs end at the origin
        past[target] = layout.past[source]
    timestamps = None
    if panel.timestamps is not None:
        timestamps = np.empty(len(values), dtype="datetime64[ns]")
        timestamps[target] = layout.timestamps[source]
        last = layout.timestamps[end - 1]
        for i in range(panel.n_series):  # one date_range per series, not per step
            days = pd.bdate_range(pd.Timestamp(last[i]), periods=horizon + 1)[1:].to_numpy()
            timestamps[offsets[i + 1] - horizon : offsets[i + 1]] = days
    starts = layout.timestamps[first] if len(first) else panel.starts
    return Panel(
        ids=panel.ids,
        values=values,
        offsets=offsets,
        starts=np.asarray(starts).astype("datetime64[ns]"),
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
