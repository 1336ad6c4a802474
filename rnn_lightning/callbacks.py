"""What a person looks at after a run: prediction plots in TensorBoard and as PNGs, and ``predictions.csv``.

Both callbacks are generic: what they draw and tabulate comes from the data module's task, through the
registry in :mod:`rnn_lightning.reports`. Everything is drawn and written by rank 0 alone: the data sets are
small enough to live in memory, so rank 0 runs the model over a whole split itself rather than gathering
outputs from every rank. Figures are built on matplotlib's Agg canvas directly (``matplotlib.figure``),
never through pyplot's global state, so no window opens and no backend setting of the user's changes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from rnn_lightning.errors import UserInputError
from rnn_lightning.kinds import report_of
from rnn_lightning.reports.common import Stage
from rnn_lightning.reports.tables import write_csv

PLOT_DPI = 110


def _run_dir(trainer: pl.Trainer) -> Path | None:
    """The run's version folder. ``trainer.log_dir`` broadcasts, so every rank must call this."""
    log_dir = trainer.log_dir
    return Path(log_dir) if log_dir else None


def render(figure: Figure, dpi: int = PLOT_DPI) -> np.ndarray:
    """``figure`` drawn once on an Agg canvas, as an (H, W, 3) uint8 RGB image.

    The PNG file and the TensorBoard image are both made from this one drawing: ``savefig`` and
    ``add_figure`` would each lay the figure out and draw it again (measured in docs/performance.md).
    """
    canvas = FigureCanvasAgg(figure)
    figure.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]  # (H, W, 3); the figure's background is opaque


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as PNG bytes.

    Level 1: a fifth of the encoding time of the default level, and these flat-coloured plots hardly
    compress better.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


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
        report = report_of(datamodule)
        if report is None:
            return
        figures = report.figures(pl_module, datamodule, stage, self.max_images)
        run_dir.mkdir(parents=True, exist_ok=True)
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        for name, figure in figures.items():
            image = render(figure)
            png = encode_png(image)
            path = run_dir / f"{name}.png"
            path.write_bytes(png)
            self.saved.append(path)
            for writer in writers:  # flushed when the Trainer finalizes its loggers, right after this hook
                writer.add_image(f"plots/{name}", image, global_step=trainer.global_step, dataformats="HWC")
        if figures:
            print(f"plots: wrote {', '.join(f'{name}.png' for name in figures)} to {run_dir}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "fit")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "test")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "predict")


# --- predictions.csv -----------------------------------------------------------------------------------


def concat_predictions(predictions: Sequence[Any]) -> dict[str, Tensor]:
    """The per-batch dicts of ``predict_step`` joined into one dict of CPU tensors."""
    batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
    return {key: torch.cat([b[key].detach().cpu() for b in batches]) for key in batches[0]}


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
        report = report_of(datamodule)
        if report is None:
            return
        table = report.table(datamodule, concat_predictions(predictions))
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / self.filename
        write_csv(table, self.path)  # to_csv(index=False, float_format="%.6f")'s bytes, vectorized
        print(f"predictions: wrote {len(table):,} rows to {self.path}; {report.summary(table)}")
