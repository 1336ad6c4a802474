"""The KOSPI task's figures and prediction rows: the close series, the model's one-step predictions and
the persistence forecast; ``predictions.csv`` with tomorrow's forecast row."""

from __future__ import annotations

import lightning.pytorch as pl
import pandas as pd
from matplotlib.figure import Figure
from torch import Tensor

from rnn_lightning.data.kospi import KospiDataModule
from rnn_lightning.tasks.common import STAGE_SPLITS, Stage, predict_all, rmse

SPLIT_COLOURS = {"train": "tab:green", "val": "tab:orange", "test": "tab:red"}
ZOOM_DAYS = 60


def figures(
    pl_module: pl.LightningModule, datamodule: KospiDataModule, stage: Stage, max_images: int
) -> dict[str, Figure]:
    """The whole close series with the model's and the naive one-step predictions, splits shaded.

    At the end of ``fit`` the series stops at the end of the validation windows, so training never
    shows the test period; ``test`` and ``predict`` draw every window, and ``predict`` adds tomorrow.
    ``max_images`` is unused: every plotter takes the same arguments.
    """
    split = STAGE_SPLITS[stage]
    if split == "val" and not datamodule.num_val:
        return {}
    dates = pd.to_datetime(datamodule.dates).to_numpy()
    close = datamodule.close.numpy()
    T = datamodule.sequence_length
    windows = datamodule.windows()
    ref, actual = windows.ref.numpy(), windows.close.numpy()
    predicted = predict_all(pl_module, windows)["prediction"].numpy()
    judged = datamodule.split_slice(split)
    shown = slice(0, judged.stop)  # windows drawn: everything up to the judged split's end
    model_rmse = rmse(predicted[judged], actual[judged])
    naive_rmse = rmse(ref[judged], actual[judged])
    window_dates = dates[T:]  # (W,) the day each window predicts

    # Fixed margins for this fixed-size figure: a constrained layout costs a third more drawing time.
    fig = Figure(figsize=(12, 7.5))
    fig.subplots_adjust(left=0.065, right=0.975, top=0.93, bottom=0.045, hspace=0.2)
    full, zoom = fig.subplots(2, 1, height_ratios=(3, 2))
    zoom_part = slice(max(judged.start, judged.stop - ZOOM_DAYS), judged.stop)
    for ax, part, marker in ((full, shown, None), (zoom, zoom_part, ".")):
        rows = slice(0, T + part.stop) if ax is full else slice(T + part.start, T + part.stop)
        ax.plot(dates[rows], close[rows], color="black", lw=1.2, marker=marker, label="actual close")
        ax.plot(window_dates[part], ref[part], color="tab:gray", lw=1, ls="--", marker=marker,
                label="naive: tomorrow = today")
        ax.plot(window_dates[part], predicted[part], color="tab:blue", lw=1.2, marker=marker,
                label=f"model ({pl_module.hparams.backbone}) one day ahead")
        ax.set_ylabel(f"{datamodule.target} (index points)")
        ax.grid(alpha=0.3)
    for name, colour in SPLIT_COLOURS.items():
        part = datamodule.split_slice(name)
        if part.stop <= part.start or part.start >= shown.stop:
            continue
        full.axvspan(window_dates[part.start], window_dates[part.stop - 1], color=colour, alpha=0.08,
                     label=f"{name} ({part.stop - part.start} days)")
    if stage == "predict":
        tomorrow = pd.Timestamp(dates[-1]) + pd.offsets.BDay(1)
        forecast = float(predict_all(pl_module, datamodule.forecast_window())["prediction"][0])
        for ax in (full, zoom):
            ax.plot([tomorrow], [forecast], marker="*", ms=14, color="tab:purple", ls="none",
                    label=f"forecast {tomorrow.date()}: {forecast:,.1f}")
    full.legend(loc="upper left", fontsize=8, ncols=2)
    zoom.legend(loc="upper left", fontsize=8)
    zoom.set_title(f"last {zoom_part.stop - zoom_part.start} {split} days", fontsize=10)
    fig.suptitle(
        f"{datamodule.target} one day ahead - {split} RMSE: model {model_rmse:,.2f}, "
        f"naive {naive_rmse:,.2f} (ratio {model_rmse / naive_rmse:.3f})"
    )
    return {f"prediction_{stage}": fig}


# --- predictions.csv ----------------------------------------------------------------------------------


def table(datamodule: KospiDataModule, outputs: dict[str, Tensor]) -> pd.DataFrame:
    """Date, actual close (empty for tomorrow), predicted close, naive close and split of every row."""
    rows = datamodule.prediction_rows()
    if len(rows) != len(outputs["prediction"]):
        raise RuntimeError(f"{len(outputs['prediction'])} predictions for {len(rows)} prediction rows")
    return pd.DataFrame({
        "date": rows["date"],
        "actual_close": outputs["actual"].double().numpy(),
        "predicted_close": outputs["prediction"].double().numpy(),
        "naive_close": rows["naive_close"],
        "split": rows["split"],
    })


def summary(table: pd.DataFrame) -> str:
    last = table.iloc[-1]
    return (f"next trading day {last['date']}: predicted close {last['predicted_close']:,.2f} "
            f"(naive {last['naive_close']:,.2f})")
