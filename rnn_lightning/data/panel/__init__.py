"""Panels: many series, one network. Readers, splits, window index, per-series scaling and batches.

The data layer of a global model::

    panel = load_panel("tourism_monthly")              # or a long CSV/Parquet, or "prices/*.csv"
    splits = split_panel(panel, input_length=36, horizon=24)
    loc, scale = splits.scaling("mean")                # per series, fit on training parts only
    for batch in PanelBatches(splits, "train", batch_size=64, shuffle=True, max_windows_per_series=8):
        ...                                            # a PanelWindows: series, x, mask, y, calendar...

All series live in one float32 array (:class:`Panel`); a window is a (series, origin) pair of ints, held
as one run of origins per series (:class:`WindowIndex`), gathered into batches by fancy indexing
(:func:`gather_windows`).
"""

from rnn_lightning.data.panel.batches import PanelBatches, PanelWindows, gather_windows
from rnn_lightning.data.panel.calendar import Calendar, calendar_features, cyclic_encoding, step_kind
from rnn_lightning.data.panel.core import Panel, infer_frequency, regular_timestamps
from rnn_lightning.data.panel.readers import (
    TOURISM_SETS,
    load_panel,
    panel_from_frame,
    read_long,
    read_tourism,
    read_yahoo_glob,
)
from rnn_lightning.data.panel.scaling import SCALINGS, fit_scaling, mase_scale, segment_quantiles
from rnn_lightning.data.panel.windows import PanelLayout, PanelSplits, WindowIndex, panel_layout, split_panel

__all__ = [
    "SCALINGS",
    "TOURISM_SETS",
    "Calendar",
    "Panel",
    "PanelBatches",
    "PanelLayout",
    "PanelSplits",
    "PanelWindows",
    "WindowIndex",
    "calendar_features",
    "cyclic_encoding",
    "fit_scaling",
    "gather_windows",
    "infer_frequency",
    "load_panel",
    "mase_scale",
    "panel_from_frame",
    "panel_layout",
    "read_long",
    "read_tourism",
    "read_yahoo_glob",
    "regular_timestamps",
    "segment_quantiles",
    "split_panel",
    "step_kind",
]
