"""What a person looks at after a run: prediction plots in TensorBoard and as PNGs, and ``predictions.csv``.

Both callbacks pick their behaviour by the data module's ``task`` from a small registry, so a new data
source adds one entry instead of a branch. Everything is drawn and written by rank 0 alone: the data
sets are small enough to live in memory, so rank 0 runs the model over a whole split itself rather than
gathering outputs from every rank. Figures are built on matplotlib's Agg canvas directly
(``matplotlib.figure.Figure``), never through pyplot's global state, so no window opens and no backend
setting of the user's is changed.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor
from torchmetrics.functional.classification import multiclass_confusion_matrix

from rnn_lightning.errors import UserInputError

if TYPE_CHECKING:
    from rnn_lightning.data.kospi import KospiDataModule
    from rnn_lightning.data.rows import RowMNISTDataModule

Stage = Literal["fit", "test", "predict"]
# The split each stage's plot judges the model on; fit never looks at the test period.
STAGE_SPLITS: dict[str, str] = {"fit": "val", "test": "test", "predict": "test"}
FORWARD_CHUNK = 2048  # samples per forward pass when rank 0 runs a whole split
PLOT_DPI = 110


def _run_dir(trainer: pl.Trainer) -> Path | None:
    """The run's version folder. ``trainer.log_dir`` broadcasts, so every rank must call this."""
    log_dir = trainer.log_dir
    return Path(log_dir) if log_dir else None


@torch.no_grad()
def _forward(pl_module: pl.LightningModule, x: Tensor, transform: Callable | None = None) -> Tensor:
    """Model outputs for all of ``x`` in chunks, in eval mode, on the CPU; restores the training mode.

    Runs under the Trainer's precision (autocast for ``bf16-mixed``, converted inputs for ``*-true``),
    so the plotted predictions are those the test step scored.
    """
    trainer = pl_module._trainer
    precision = trainer.precision_plugin if trainer is not None else None
    was_training = pl_module.training
    pl_module.eval()
    try:
        outs = []
        for start in range(0, len(x), FORWARD_CHUNK):
            chunk = x[start : start + FORWARD_CHUNK]
            if transform is not None:
                chunk = transform((chunk,))[0]
            chunk = chunk.to(pl_module.device)
            if precision is None:
                outs.append(pl_module(chunk).float().cpu())
                continue
            with precision.forward_context():
                outs.append(pl_module(precision.convert_input(chunk)).float().cpu())
        return torch.cat(outs)
    finally:
        pl_module.train(was_training)


def _render(figure: Figure, dpi: int = PLOT_DPI) -> np.ndarray:
    """``figure`` drawn once on an Agg canvas, as an (H, W, 3) uint8 RGB image.

    The PNG file and the TensorBoard image are both made from this one drawing: ``savefig`` and
    ``add_figure`` would each lay the figure out and draw it again (~0.35 s of a KOSPI fit, about 5%).
    """
    canvas = FigureCanvasAgg(figure)
    figure.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]  # (H, W, 3); the figure's background is opaque


def _encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as PNG bytes. Level 1: a fifth of the encoding time of the default level, and
    these flat-coloured plots hardly compress better."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _add_png(writer: Any, tag: str, png: bytes, image: np.ndarray, step: int) -> None:
    """Log the PNG already encoded for the file as a TensorBoard image, as ``add_image`` would log it.

    ``add_image`` would convert the pixels to float, rescale them and encode them again at zlib's default
    level (~0.15 s for the KOSPI figure, ~2% of its fit). The event holds the same PNG either way.
    """
    file_writer = getattr(writer, "_get_file_writer", None)
    if file_writer is None:  # a writer without torch's/tensorboardX's layout: the public call
        writer.add_image(tag, image, global_step=step, dataformats="HWC")
        return
    height, width, channels = image.shape
    picture = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)


def _rmse(prediction: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((prediction - actual) ** 2)))


# --- KOSPI: the close series, the model's one-step predictions and the persistence forecast ------------

SPLIT_COLOURS = {"train": "tab:green", "val": "tab:orange", "test": "tab:red"}
ZOOM_DAYS = 60


def kospi_predictions(datamodule: KospiDataModule, pl_module: pl.LightningModule) -> np.ndarray:
    """The model's next-day close for every window, in price units (W,)."""
    x, _, ref, _ = datamodule._all_windows()
    return datamodule.to_price(_forward(pl_module, x), ref).numpy()


def kospi_forecast(datamodule: KospiDataModule, pl_module: pl.LightningModule) -> float:
    """The model's close for the trading day after the CSV's last row."""
    last = torch.as_tensor(datamodule._window_inputs_last(), dtype=torch.float32)[None]  # (1, T, F)
    ref = torch.as_tensor(datamodule.close[-1:])
    return float(datamodule.to_price(_forward(pl_module, last), ref)[0])


def kospi_figures(
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
    close = datamodule.close
    T = datamodule.sequence_length
    _, _, ref, actual = (t.numpy() for t in datamodule._all_windows())
    predicted = kospi_predictions(datamodule, pl_module)
    judged = datamodule.split_slice(split)
    shown = slice(0, judged.stop)  # windows drawn: everything up to the judged split's end
    model_rmse = _rmse(predicted[judged], actual[judged])
    naive_rmse = _rmse(ref[judged], actual[judged])
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
        forecast = kospi_forecast(datamodule, pl_module)
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


# --- Classification: confusion matrix and the misclassified images -------------------------------------


def classification_outputs(
    datamodule: RowMNISTDataModule, pl_module: pl.LightningModule, split: str
) -> tuple[Tensor, Tensor, Tensor]:
    """uint8 images (N, 28, 28), true labels (N,) and predicted labels (N,) of ``split``."""
    from rnn_lightning.data.rows import to_unit_float

    images, labels = datamodule.split_tensors(split)
    predicted = _forward(pl_module, images, transform=to_unit_float).argmax(dim=1)
    return images, labels, predicted


def classification_figures(
    pl_module: pl.LightningModule, datamodule: RowMNISTDataModule, stage: Stage, max_images: int
) -> dict[str, Figure]:
    """A confusion matrix, and a grid of the first ``max_images`` misclassified images of the split."""
    split = STAGE_SPLITS[stage]
    if split == "val" and not datamodule.has_validation:
        return {}
    images, labels, predicted = classification_outputs(datamodule, pl_module, split)
    if not len(labels):
        return {}
    num_classes = int(pl_module.hparams.num_outputs)
    matrix = multiclass_confusion_matrix(predicted, labels, num_classes).numpy()  # row: true, column: predicted
    correct = int(np.trace(matrix))
    dataset = getattr(datamodule, "dataset", "")

    fig = Figure(figsize=(7, 6.2), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    threshold = np.log1p(matrix).max() / 2
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if np.log1p(count) > threshold else "black")
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="log(1 + count)")
    ax.set_title(f"{dataset} {split}: accuracy {correct / len(labels):.2%} ({correct:,}/{len(labels):,})")
    figures = {f"confusion_matrix_{stage}": fig}

    wrong = torch.nonzero(predicted != labels).flatten()[:max_images]
    if len(wrong):
        cols = min(len(wrong), 5)
        rows = math.ceil(len(wrong) / cols)
        grid = Figure(figsize=(1.6 * cols, 1.8 * rows + 0.4), layout="constrained")
        axes = np.atleast_1d(grid.subplots(rows, cols)).flatten()
        for ax, index in zip(axes, wrong.tolist(), strict=False):
            ax.imshow(images[index].numpy(), cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(f"#{index}: true {int(labels[index])}, pred {int(predicted[index])}", fontsize=7)
        for ax in axes:
            ax.axis("off")
        total = int((predicted != labels).sum())
        grid.suptitle(f"{split}: first {len(wrong)} of {total:,} misclassified", fontsize=9)
        figures[f"misclassified_{stage}"] = grid
    return figures


# task -> (model, data module, stage, max_images) -> {name: figure}
FigureFn = Callable[[pl.LightningModule, Any, str, int], dict[str, Figure]]
PLOTTERS: dict[str, FigureFn] = {"regression": kospi_figures, "classification": classification_figures}


class PredictionPlots(Callback):
    """Prediction plots at the end of ``fit`` (validation data), ``test`` and ``predict`` (test data).

    Regression (KOSPI): the close series in price units with the model's one-step predictions, the
    naive persistence forecast and the train/val/test periods shaded, titled with both RMSEs.
    Classification (MNIST): a confusion matrix and a grid of misclassified images. Each figure goes to
    TensorBoard (an image, tag ``plots/<name>``) and to ``<name>.png`` in the run folder.

    Args:
        enabled: Draw anything at all (``--plots.enabled false`` turns the plots off).
        max_images: Misclassified images in the classification grid (0: no grid).
    """

    def __init__(self, enabled: bool = True, max_images: int = 25) -> None:
        super().__init__()
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 0:
            raise UserInputError(f"plots.max_images must be an int >= 0, got {max_images!r}")
        self.enabled = enabled
        self.max_images = max_images
        self.saved: list[Path] = []

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        if not self.enabled or trainer.fast_dev_run or trainer.sanity_checking:
            return
        run_dir = _run_dir(trainer)  # collective: before the rank check
        if not trainer.is_global_zero or run_dir is None:
            return
        datamodule = trainer.datamodule
        plotter = PLOTTERS.get(getattr(datamodule, "task", ""))
        if plotter is None:
            return
        figures = plotter(pl_module, datamodule, stage, self.max_images)
        run_dir.mkdir(parents=True, exist_ok=True)
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        for name, figure in figures.items():
            image = _render(figure)
            png = _encode_png(image)
            path = run_dir / f"{name}.png"
            path.write_bytes(png)
            self.saved.append(path)
            for writer in writers:  # flushed when the Trainer finalizes its loggers, right after this hook
                _add_png(writer, f"plots/{name}", png, image, trainer.global_step)
        if figures:
            print(f"plots: wrote {', '.join(f'{name}.png' for name in figures)} to {run_dir}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "fit")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "test")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "predict")


# --- predictions.csv -----------------------------------------------------------------------------------


def _concat(predictions: Sequence[Any]) -> dict[str, Tensor]:
    """The per-batch dicts of ``predict_step`` joined into one dict of CPU tensors."""
    batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
    return {key: torch.cat([b[key].detach().cpu() for b in batches]) for key in batches[0]}


def regression_table(datamodule: KospiDataModule, outputs: dict[str, Tensor]) -> pd.DataFrame:
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


def classification_table(datamodule: RowMNISTDataModule, outputs: dict[str, Tensor]) -> pd.DataFrame:
    """Test-image index, predicted and true label, and the probability of every class."""
    probabilities = outputs["probabilities"].double().numpy()
    table = pd.DataFrame({
        "index": np.arange(len(probabilities)),
        "predicted": outputs["prediction"].numpy(),
        "actual": outputs["actual"].numpy(),
    })
    for k in range(probabilities.shape[1]):
        table[f"p{k}"] = probabilities[:, k]
    return table


def _regression_summary(table: pd.DataFrame) -> str:
    last = table.iloc[-1]
    return (f"next trading day {last['date']}: predicted close {last['predicted_close']:,.2f} "
            f"(naive {last['naive_close']:,.2f})")


def _classification_summary(table: pd.DataFrame) -> str:
    return f"accuracy {(table['predicted'] == table['actual']).mean():.2%} on {len(table):,} images"


TABLES: dict[str, tuple[Callable[[Any, dict[str, Tensor]], pd.DataFrame], Callable[[pd.DataFrame], str]]] = {
    "regression": (regression_table, _regression_summary),
    "classification": (classification_table, _classification_summary),
}


class PredictionWriter(BasePredictionWriter):
    """Write ``predict``'s outputs to ``<run folder>/predictions.csv`` on rank 0 and say where.

    Regression (KOSPI): ``date, actual_close, predicted_close, naive_close, split`` for every window
    (split ``train``, ``val`` or ``test``) plus one ``forecast`` row for the trading day after the CSV's
    last row, whose actual close is empty. Classification: ``index, predicted, actual, p0..pK``.

    Args:
        enabled: Write the file (``--predictions.enabled false`` turns it off).
        filename: Name of the CSV inside the run folder.
    """

    def __init__(self, enabled: bool = True, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.enabled = enabled
        self.filename = filename
        self.path: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Rows are matched to dates by order, not by batch indices, which in-memory batches do not carry.
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices", category=UserWarning)

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if not self.enabled:
            return
        run_dir = _run_dir(trainer)  # collective: before the rank check
        if not trainer.is_global_zero or run_dir is None or not predictions:
            return
        datamodule = trainer.datamodule
        entry = TABLES.get(getattr(datamodule, "task", ""))
        if entry is None:
            return
        make_table, summary = entry
        table = make_table(datamodule, _concat(predictions))
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / self.filename
        table.to_csv(self.path, index=False, float_format="%.6f")
        print(f"predictions: wrote {len(table):,} rows to {self.path}; {summary(table)}")
