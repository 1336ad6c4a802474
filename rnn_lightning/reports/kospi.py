"""The KOSPI task's figures and prediction rows.

The close series, the model's predictions (with its forecast interval as a band for the quantile and
Gaussian heads) and the persistence forecast; ``predictions.csv`` with the forecast rows of the next
``horizon`` business days.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from torch import Tensor

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.models.heads import Head
from rnn_lightning.reports.common import STAGE_SPLITS, Stage, predict_all, rmse

SPLIT_COLOURS = {"train": "tab:green", "val": "tab:orange", "test": "tab:red"}
ZOOM_DAYS = 60


def _first_day(values: np.ndarray, horizon: int) -> np.ndarray:
    """Per-window values (W,) / (W, Q) for H = 1 or (W, H) / (W, H, Q) otherwise -> day 1: (W,) / (W, Q)."""
    return values if horizon == 1 else values[:, 0]


def _head(pl_module: pl.LightningModule | None) -> Head | None:
    """The model's head, or None without a model at hand."""
    head = pl_module.head if pl_module is not None else None
    return head if isinstance(head, Head) else None


def _levels(pl_module: pl.LightningModule | None) -> list[float] | None:
    """The quantile levels of the model's head, or None for a point head (or no model at hand)."""
    head = _head(pl_module)
    return head.interval_levels() if head is not None else None


def _interval_label(levels: list[float]) -> str:
    if not levels:
        return "interval"
    return f"{levels[-1] - levels[0]:.0%} interval (q{levels[0]:g}-q{levels[-1]:g})"


def figures(
    pl_module: pl.LightningModule, datamodule: DailyPricesDataModule, stage: Stage, max_images: int
) -> dict[str, Figure]:
    """The whole close series with the model's and the naive predictions, splits shaded.

    The series drawn is each window's first day ahead; the quantile and Gaussian heads' central interval
    is a band around it. At the end of ``fit`` the series stops at the end of the validation windows, so
    training never shows the test period; ``test`` and ``predict`` draw every window, and ``predict`` adds
    the forecast of the next ``horizon`` business days (with its band). ``max_images`` is unused: every
    plotter takes the same arguments.
    """
    split = STAGE_SPLITS[stage]
    if split == "val" and not datamodule.num_val:
        return {}
    H = datamodule.horizon
    dates = pd.to_datetime(datamodule.dates).to_numpy()
    close = datamodule.close.numpy()
    T = datamodule.sequence_length
    windows = datamodule.windows()
    ref, actual = windows.ref.numpy(), _first_day(windows.close.numpy(), H)
    outputs = predict_all(pl_module, windows)
    predicted = _first_day(outputs["prediction"].numpy(), H)  # (W,)
    levels = _levels(pl_module)
    band = _first_day(outputs["quantiles"].numpy(), H)[:, [0, -1]] if levels else None  # (W, 2)
    judged = datamodule.split_slice(split)
    shown = slice(0, judged.stop)  # windows drawn: everything up to the judged split's end
    model_rmse = rmse(predicted[judged], actual[judged])
    naive_rmse = rmse(ref[judged], actual[judged])
    window_dates = dates[T : T + len(ref)]  # (W,) the first day each window predicts

    # Fixed margins for this fixed-size figure: a constrained layout costs more drawing time (docs/performance.md).
    fig = Figure(figsize=(12, 7.5))
    fig.subplots_adjust(left=0.065, right=0.975, top=0.93, bottom=0.045, hspace=0.2)
    full, zoom = fig.subplots(2, 1, height_ratios=(3, 2))
    zoom_part = slice(max(judged.start, judged.stop - ZOOM_DAYS), judged.stop)
    ahead = "one day ahead" if H == 1 else f"day 1 of {H} ahead"
    members = int(pl_module.hparams.get("members", 1))
    backbone = pl_module.hparams.backbone
    who = f"model ({backbone})" if members == 1 else f"ensemble of {members} {backbone} models"
    # A point ensemble's band is its members' spread (rnn_lightning/models/heads/ensemble.py), not a forecast
    # distribution.
    head = _head(pl_module)
    band_source = "members'" if head is not None and head.interval_from_members() else "model"
    for ax, part, marker in ((full, shown, None), (zoom, zoom_part, ".")):
        rows = slice(0, T + part.stop) if ax is full else slice(T + part.start, T + part.stop)
        ax.plot(dates[rows], close[rows], color="black", lw=1.2, marker=marker, label="actual close")
        ax.plot(
            window_dates[part],
            ref[part],
            color="tab:gray",
            lw=1,
            ls="--",
            marker=marker,
            label="naive: tomorrow = today",
        )
        ax.plot(
            window_dates[part],
            predicted[part],
            color="tab:blue",
            lw=1.2,
            marker=marker,
            label=f"{who} {ahead}",
        )
        if band is not None:
            ax.fill_between(
                window_dates[part],
                band[part, 0],
                band[part, 1],
                color="tab:blue",
                alpha=0.18,
                lw=0,
                label=f"{band_source} {_interval_label(levels or [])}",
            )
        ax.set_ylabel(f"{datamodule.target} (index points)")
        ax.grid(alpha=0.3)
    for name, colour in SPLIT_COLOURS.items():
        part = datamodule.split_slice(name)
        if part.stop <= part.start or part.start >= shown.stop:
            continue
        full.axvspan(
            window_dates[part.start],
            window_dates[part.stop - 1],
            color=colour,
            alpha=0.08,
            label=f"{name} ({part.stop - part.start} days)",
        )
    if stage == "predict":
        last = pd.Timestamp(dates[-1])
        days = [last + pd.offsets.BDay(d) for d in range(1, H + 1)]
        forecast = predict_all(pl_module, datamodule.forecast_window())
        path = forecast["prediction"].numpy().reshape(H)
        label = (
            f"forecast {days[0].date()}: {path[0]:,.1f}"
            if H == 1
            else (f"forecast {days[0].date()}..{days[-1].date()}: {path[0]:,.1f} .. {path[-1]:,.1f}")
        )
        for ax in (full, zoom):
            ax.plot(
                days,
                path,
                marker="*",
                ms=14 if H == 1 else 9,
                color="tab:purple",
                ls="none" if H == 1 else "-",
                label=label,
            )
            if levels:
                q = forecast["quantiles"].numpy().reshape(H, len(levels))[:, [0, -1]]  # (H, 2)
                if H > 1:
                    ax.fill_between(days, q[:, 0], q[:, 1], color="tab:purple", alpha=0.2, lw=0)
                else:
                    ax.errorbar(
                        days, path, yerr=[path - q[:, 0], q[:, 1] - path], color="tab:purple", capsize=4, ls="none"
                    )
    full.legend(loc="upper left", fontsize=8, ncols=2)
    zoom.legend(loc="upper left", fontsize=8)
    zoom.set_title(f"last {zoom_part.stop - zoom_part.start} {split} days", fontsize=10)
    fig.suptitle(
        f"{datamodule.target} {ahead} - {split} RMSE: model {model_rmse:,.2f}, "
        f"naive {naive_rmse:,.2f} (ratio {model_rmse / naive_rmse:.3f})"
    )
    return {f"prediction_{stage}": fig}


# --- predictions.csv ----------------------------------------------------------------------------------


def quantile_column(level: float) -> str:
    """The predictions.csv column of a forecast quantile: ``q0.1_close`` for level 0.1."""
    return f"q{level:g}_close"


def table(datamodule: DailyPricesDataModule, outputs: dict[str, Tensor]) -> pd.DataFrame:
    """Date, actual close (empty for the forecast rows), predicted close, naive close and split per row.

    One row per window and day ahead (:meth:`DailyPricesDataModule.prediction_rows`).

    The quantile and Gaussian heads add one ``q<level>_close`` column per quantile level (prices; the
    predicted close is their median); the Gaussian head also ``target_mean`` and ``target_scale``, its
    distribution of the unscaled target (index points, differences or log returns).
    """
    rows = datamodule.prediction_rows()
    prediction = outputs["prediction"].double().numpy().reshape(-1)
    if len(rows) != len(prediction):
        raise RuntimeError(f"{len(prediction)} predictions for {len(rows)} prediction rows")
    columns = {"date": rows["date"]}
    if "origin" in rows:
        columns.update(origin=rows["origin"], h=rows["h"])
    columns.update(
        actual_close=outputs["actual"].double().numpy().reshape(-1),
        predicted_close=prediction,
        naive_close=rows["naive_close"],
    )
    if "quantiles" in outputs:
        quantiles = outputs["quantiles"].double().numpy()
        quantiles = quantiles.reshape(-1, quantiles.shape[-1])  # (rows, Q)
        model = getattr(getattr(datamodule, "trainer", None), "lightning_module", None)
        levels = _levels(model)
        names = (
            [quantile_column(q) for q in levels] if levels else [f"q{i + 1}_close" for i in range(quantiles.shape[1])]
        )
        for i, name in enumerate(names):
            columns[name] = quantiles[:, i]
    for key in ("mean", "scale"):
        if key in outputs:
            columns[f"target_{key}"] = outputs[key].double().numpy().reshape(-1)
    columns["split"] = rows["split"]
    return pd.DataFrame(columns)


def summary(table: pd.DataFrame) -> str:
    """One line on the forecast rows: the next trading day's (or days') predicted close and interval."""
    forecast = table[table["split"] == "forecast"]
    bands = [c for c in table.columns if c.startswith("q") and c.endswith("_close")]

    def one(row: pd.Series) -> str:
        interval = f" [{row[bands[0]]:,.2f}, {row[bands[-1]]:,.2f}]" if bands else ""
        return f"{row['predicted_close']:,.2f}{interval}"

    if len(forecast) == 1:
        last = forecast.iloc[0]
        return f"next trading day {last['date']}: predicted close {one(last)} (naive {last['naive_close']:,.2f})"
    path = ", ".join(f"{row['date']} {one(row)}" for _, row in forecast.iterrows())
    return f"next {len(forecast)} trading days: predicted closes {path} (naive {forecast.iloc[0]['naive_close']:,.2f})"
