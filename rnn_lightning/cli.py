"""The ``rnn-lightning`` command: LightningCLI with data sizes linked into the model and safe defaults.

``main(args)`` is the entry point for the console script, ``python -m rnn_lightning`` and tests.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI

from rnn_lightning.callbacks import PredictionPlots, PredictionWriter
from rnn_lightning.checkpointing import RunCheckpoint
from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.module import RecurrentModel

DEBUG_ENV = "RNN_LIGHTNING_DEBUG"
LINKED_SIZES = ("task", "input_size", "sequence_length", "num_outputs")


class RnnLightningCLI(LightningCLI):
    """LightningCLI over :class:`RecurrentModel` and any :class:`InMemoryDataModule` (``class_path``)."""

    def add_arguments_to_parser(self, parser) -> None:
        for name in LINKED_SIZES:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.filename": "best-{epoch:03d}"})
        # Plots (fit/test/predict) and predictions.csv (predict); --plots.enabled false etc. turn them off.
        parser.add_lightning_class_args(PredictionPlots, "plots")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--num_threads",
            type=int | None,
            default=None,
            help="torch intra-op CPU threads; 1 is fastest for the tiny KOSPI models (None: torch's default)",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("num_threads"):
            torch.set_num_threads(config["num_threads"])

    def _check_ckpt_path(self) -> None:
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
            return
        path = Path(ckpt_path)
        if not path.is_file():
            raise UserInputError(f"checkpoint {path}: no such file")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # torch raises several types for torn or foreign files
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise UserInputError(f"checkpoint {path}: corrupt or not a checkpoint ({reason})") from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise UserInputError(f"checkpoint {path}: not a Lightning checkpoint (no state_dict)")

    def before_fit(self) -> None:
        self._check_ckpt_path()

    before_validate = before_test = before_predict = before_fit


def main(args: list[str] | None = None) -> None:
    """Run ``rnn-lightning``; bad input ends in a one-line error and exit status 2, not a traceback."""
    # Our batches are plain tensors in memory: no DataLoader workers to suggest.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    try:
        RnnLightningCLI(
            RecurrentModel,
            InMemoryDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except UserInputError as err:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"rnn-lightning: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
