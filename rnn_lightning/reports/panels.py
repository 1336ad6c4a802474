"""A panel's figures, per-series scores and prediction rows.

* ``figures``: a few series' history, actuals and forecasts (with the head's interval as a band, and the
  seasonal naive forecast), for the validation windows at the end of ``fit`` and the test windows at
  ``test`` and ``predict``. At ``test`` it also writes ``series_metrics.csv`` (one row per series:
  MASE, sMAPE, MAPE, RMSE of the model, the seasonal naive and the naive forecast) into the run folder.
* ``table``: ``predictions.csv``: ``unique_id, ds, y_hat`` (plus ``q<level>`` columns for an interval),
  then ``y`` (empty for the future), ``snaive``, ``h`` and ``split`` (``test``, or ``future``: the steps
  after each series' last observation, with ``--data.future true``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from torch import Tensor

from rnn_lightning.data.panel.batches import gather_windows, seasonal_positions
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.reports.common import STAGE_SPLITS, Stage, predict_all
from rnn_lightning.reports.tables import write_csv

SHOWN_SERIES = 4  # series drawn per figure
HISTORY_HORIZONS = 3  # history drawn before each forecast, in horizons
SERIES_METRICS = "series_metrics.csv"


def _levels(pl_module: Any) -> list[float] | None:
    """The quantile levels of the model's head (None: a point head, or no model at hand)."""
    return pl_module.head.interval_levels() if isinstance(pl_module, RecurrentModel) else None


def quantile_column(level: float) -> str:
    """The predictions.csv column of a forecast quantile: ``q0.1`` for level 0.1."""
    return f"q{level:g}"


def series_scores(pl_module: Any, datamodule: Any, stage: str = "test") -> pd.DataFrame | None:
    """The model's last ``stage`` epoch's per-series scores as a table (None before any), one row per series."""
    panel = pl_module.panel if isinstance(pl_module, RecurrentModel) else None
    scores = panel.scores.get(stage) if panel is not None else None
    if not scores:
        return None
    frame = pd.DataFrame({"unique_id": datamodule.panel.ids})
    for name, values in scores.items():
        frame[name] = values.detach().cpu().numpy()
    frame["mase_ratio"] = frame["mase"] / frame["snaive_mase"]
    return frame[frame["count"] > 0].reset_index(drop=True)


def _write_scores(pl_module: pl.LightningModule, datamodule: Any) -> None:
    """``series_metrics.csv`` in the logger's run folder (rank 0 calls this; the logger's folder is local)."""
    frame = series_scores(pl_module, datamodule)
    logger = pl_module.logger
    folder = getattr(logger, "log_dir", None) if logger is not None else None
    if frame is None or not folder:
        return
    path = Path(folder) / SERIES_METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(frame, path)
    print(f"series metrics: wrote {len(frame)} series to {path}")


def figures(pl_module: pl.LightningModule, datamodule: Any, stage: Stage, max_images: int) -> dict[str, Figure]:
    """A few series' history, actuals, forecasts and seasonal naive forecasts, one panel each.

    The first window of each of the first ``SHOWN_SERIES`` series of the split the stage judges
    (validation at the end of ``fit``, which never shows the test period). ``max_images`` is unused.
    """
    split = STAGE_SPLITS[stage]
    if split == "val" and not datamodule.has_validation:
        return {}
    if stage == "test":
        _write_scores(pl_module, datamodule)
    splits = datamodule.splits
    index = splits.windows(split)
    if not len(index):
        return {}
    firsts = np.flatnonzero(np.r_[True, index.series[1:] != index.series[:-1]])[:SHOWN_SERIES]
    batch = gather_windows(splits, index, firsts, datamodule.season_length)
    rows = predict_all(pl_module, batch)
    H = index.horizon
    forecast = rows["prediction"].numpy().reshape(len(firsts), H)
    levels = _levels(pl_module)
    band = rows["quantiles"].numpy().reshape(len(firsts), H, -1)[..., [0, -1]] if levels else None
    layout = splits.layout
    fig = Figure(figsize=(12, 2.6 * len(firsts)))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.05, hspace=0.45)
    axes = np.atleast_1d(fig.subplots(len(firsts), 1))
    for k, ax in enumerate(axes):
        s, origin = int(batch.series[k]), int(batch.origin[k])
        begin = max(int(layout.offsets[s]), origin - HISTORY_HORIZONS * H)
        past = slice(begin, origin)
        ahead = slice(origin, origin + H)
        ts = layout.timestamps
        ax.plot(ts[past], layout.values[past], color="black", lw=1.1, label="history")
        ax.plot(ts[ahead], layout.values[ahead], color="black", lw=1.1, ls=":", marker=".", label="actual")
        ax.plot(ts[ahead], batch.snaive[k].numpy(), color="tab:gray", ls="--", lw=1, label="seasonal naive")
        ax.plot(ts[ahead], forecast[k], color="tab:blue", lw=1.3, label="model")
        if band is not None:
            ax.fill_between(ts[ahead], band[k, :, 0], band[k, :, 1], color="tab:blue", alpha=0.18, lw=0)
        ax.set_title(f"series {layout.ids[s]} ({split})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7, ncols=4)
    fig.suptitle(f"{datamodule.panel.source}: {H} steps ahead, {split} windows")
    return {f"panel_{stage}": fig}


def table(datamodule: Any, outputs: dict[str, Tensor]) -> pd.DataFrame:
    """``unique_id, ds, y_hat`` (+ quantiles), ``y``, ``snaive``, ``h``, ``split``: one row per predicted step."""
    rows = datamodule.prediction_rows()
    y_hat = outputs["prediction"].double().numpy().reshape(-1)
    if len(rows) != len(y_hat):
        raise RuntimeError(f"{len(y_hat)} predictions for {len(rows)} prediction rows")
    columns: dict[str, Any] = {"unique_id": rows["unique_id"], "ds": rows["ds"], "y_hat": y_hat}
    if "quantiles" in outputs:
        quantiles = outputs["quantiles"].double().numpy()
        quantiles = quantiles.reshape(-1, quantiles.shape[-1])  # (rows, Q)
        model = getattr(getattr(datamodule, "trainer", None), "lightning_module", None)
        levels = _levels(model) or [float(i + 1) for i in range(quantiles.shape[1])]
        for i, level in enumerate(levels):
            columns[quantile_column(level)] = quantiles[:, i]
    columns["y"] = outputs["actual"].double().numpy().reshape(-1)
    columns["snaive"] = _snaive(datamodule)
    columns["h"] = rows["h"]
    columns["split"] = rows["split"]
    return pd.DataFrame(columns)


def _snaive(datamodule: Any) -> np.ndarray:
    """The seasonal naive forecast of every predicted step, in ``prediction_rows`` order.

    Read from the values at :func:`seasonal_positions` of the test windows' origins: not a gather of
    every test window's inputs and calendars (gigabytes at 10^6 series) for one (W, H) array.
    """
    parts = [datamodule.splits] + ([datamodule.future_splits] if datamodule.future else [])
    forecasts = []
    for splits in parts:
        index, layout = splits.test, splits.layout
        first = layout.offsets[index.series]
        positions = seasonal_positions(index.origin, first, index.horizon, datamodule.season_length)
        forecasts.append(np.asarray(layout.values[positions], dtype=np.float64).reshape(-1))
    return np.concatenate(forecasts)


def summary(table: pd.DataFrame) -> str:
    """One line: how many series and steps, and the test rows' MAE beside the seasonal naive's."""
    test = table[table["split"] == "test"]
    line = f"{table['unique_id'].nunique()} series"
    if len(test):
        mae = float(np.mean(np.abs(test["y_hat"] - test["y"])))
        snaive = float(np.mean(np.abs(test["snaive"] - test["y"])))
        line += f", test MAE {mae:,.4g} (seasonal naive {snaive:,.4g})"
    future = table[table["split"] == "future"]
    if len(future):
        line += f", future {future['ds'].min()}..{future['ds'].max()}"
    return line
