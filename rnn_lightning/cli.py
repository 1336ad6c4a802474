"""The ``rnn-lightning`` command: LightningCLI with data sizes linked into the model and safe defaults.

``main(args)`` is the entry point for the console script, ``python -m rnn_lightning`` and tests.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, NoReturn

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics import Metric

from rnn_lightning import speedups
from rnn_lightning.backtest import BacktestSettings, run_backtest
from rnn_lightning.callbacks import PredictionPlots, PredictionWriter
from rnn_lightning.checkpointing import AtomicCheckpointIO, BestCheckpoint, last_checkpoint_defaults
from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.errors import UserInputError, print_error
from rnn_lightning.export import ExportSettings, run_export
from rnn_lightning.export import check_settings as check_export_settings
from rnn_lightning.models.module import RecurrentModel

DEBUG_ENV = "RNN_LIGHTNING_DEBUG"
# What the data determines, linked from the data module into the model: no config states it twice.
LINKED_SIZES = ("task", "input_size", "sequence_length", "num_outputs", "scaling_spec")
# Lightning defaults the project changes, where --print_config and the saved config.yaml show them.
TRAINER_DEFAULTS = {"plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.AtomicCheckpointIO"}]}
TYPE_ERROR = re.compile(r"Expected a (?:<class '([\w.]+)'>|typing\.Literal\[(.*)\])\. Got value: (.*)")


def _one_line(message: str) -> str:
    """Jsonargparse's multi-line type error as one line, e.g. ``data.batch_size: expected int, got 2.5``."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    expected = re.search(TYPE_ERROR, message)
    if keys and expected:
        wanted = expected[1] or f"one of {expected[2]}"
        return f"{'.'.join(keys)}: expected {wanted}, got {expected[3].strip()}"
    return " ".join(message.split())


class OneLineErrorParser(LightningArgumentParser):
    """Argument errors as one line instead of argparse's usage block (about 90 lines here).

    ``RNN_LIGHTNING_DEBUG=1`` restores jsonargparse's own output.
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get(DEBUG_ENV):
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        print_error(f"{_one_line(message)} (see {prog} --help)")
        raise SystemExit(2)


def _user_input_error(err: BaseException | None) -> UserInputError | None:
    """The :class:`UserInputError` behind ``err``: jsonargparse wraps those raised while instantiating."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserInputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def resume_logger(ckpt_path: str | None, logger: object, default_root_dir: str | None) -> TensorBoardLogger | None:
    """The logger that puts a resumed fit into the run folder its checkpoint came from, or None.

    Applies to ``fit --ckpt_path ROOT/lightning_logs/version_N/checkpoints/*.ckpt`` with the default
    logger and ``ROOT`` the run's ``default_root_dir`` (the working directory when unset): the resumed
    epochs' TensorBoard scalars and checkpoints then join version_N instead of a new ``version_N+1``.
    A configured logger or another root keeps Lightning's behaviour, a new version folder.
    """
    if not ckpt_path or not Path(ckpt_path).is_file() or logger not in (None, True):
        return None
    path = Path(ckpt_path).resolve()
    run_dir = path.parent.parent
    # Spelled as Lightning's default logger spells it, so the checkpoint callback sees the same folder
    # and restores its state (best model, last.ckpt) instead of starting a last-v1.ckpt.
    root = default_root_dir or os.getcwd()
    if (
        path.parent.name != "checkpoints"
        or run_dir.parent != Path(root).resolve() / "lightning_logs"
        or not re.fullmatch(r"version_\d+", run_dir.name)
    ):
        return None
    # Expected here, so not worth Lightning's warning.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    return TensorBoardLogger(save_dir=root, name="lightning_logs", version=int(run_dir.name.removeprefix("version_")))


class RnnTrainer(Trainer):
    """Lightning's Trainer plus the signatures of the project's own subcommands.

    LightningCLI builds a subcommand's arguments from the Trainer method of that name; the CLI's method
    of the same name runs it (it needs the whole config: a backtest builds a Trainer per fold).
    """

    def backtest(
        self, model: LightningModule, datamodule: Any = None, backtest: BacktestSettings | None = None
    ) -> None:
        """Walk-forward backtest: fit and test one config over rolling origins (rnn_lightning/backtest.py)."""
        raise NotImplementedError("run through `rnn-lightning backtest`")

    def export(
        self,
        model: LightningModule,
        datamodule: Any = None,
        ckpt_path: str | None = None,
        export: ExportSettings | None = None,
    ) -> None:
        """Export a checkpoint as one ONNX or TorchScript file, checked against predict (rnn_lightning/export.py)."""
        raise NotImplementedError("run through `rnn-lightning export`")


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger/litmodels" lines; every other message stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def _hide_advertisements() -> None:
    # Lightning prints its tips through rank_zero_info on this logger (lightning.pytorch.utilities.rank_zero).
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisement) for f in logger.filters):
        logger.addFilter(_NoAdvertisement())


class RnnLightningCLI(LightningCLI):
    """LightningCLI over :class:`RecurrentModel` and any :class:`InMemoryDataModule` (``class_path``)."""

    def __init__(self, *args, **kwargs) -> None:
        _hide_advertisements()
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            **LightningCLI.subcommands(),
            "backtest": {"model", "datamodule"},
            "export": {"model", "datamodule"},
        }

    def add_arguments_to_parser(self, parser) -> None:
        for name in LINKED_SIZES:
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        # The best model by the monitored loss, and last.ckpt after every epoch (rnn_lightning/checkpointing.py).
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.filename": "best-{epoch:03d}"})
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(last_checkpoint_defaults())
        # Plots (fit/test/predict) and predictions.csv (predict); --plots.enabled false etc. turn them off.
        parser.add_lightning_class_args(PredictionPlots, "plots")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--num_threads",
            type=int | None,
            default=None,
            help="torch intra-op CPU threads; 1 is fastest for the tiny KOSPI models (None: torch's default)",
        )
        parser.add_argument(
            "--speedups",
            type=bool,
            default=True,
            help="the speed-ups of rnn_lightning/speedups.py (docs/performance.md); false for plain Lightning",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        speedups.apply(config.get("speedups", True))  # before any data is read
        if config.get("num_threads"):
            torch.set_num_threads(config["num_threads"])

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if self.subcommand == "fit":
            logger = resume_logger(
                config.get("ckpt_path"), config.get("trainer.logger"), config.get("trainer.default_root_dir")
            )
            if logger is not None:
                kwargs["logger"] = logger  # for this process only; the saved config.yaml stays as given
        # A copy, taken now: the Trainer appends its default callbacks (the progress bar among them) to the
        # very list the config holds.
        configured = config.get("trainer.callbacks") or []
        configured = list(configured) if isinstance(configured, list) else [configured]
        trainer = super().instantiate_trainer(**kwargs)
        speedups.pace_progress_bar(trainer, configured)
        if self.subcommand != "predict":
            # It writes predict's outputs only; elsewhere it would just be called at every hook of every step.
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, PredictionWriter)]
        return trainer

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before any data is read, and keep the config the source of the model's sizes.

        Lightning's version of this hook silently replaces the config's model arguments with the
        checkpoint's hyperparameters; here a checkpoint of other sizes or another task is an error
        instead (:meth:`RecurrentModel.on_load_checkpoint` names the differences).
        """
        if self.config.get("subcommand"):
            self._check_ckpt_path(self.config[self.config.subcommand].get("ckpt_path"))

    def _check_ckpt_path(self, ckpt_path: str | None) -> None:
        special = ("last", "best", "hpc", "registry")  # resolved by Lightning itself
        if not ckpt_path or ckpt_path in special or ckpt_path == self._ckpt_checked:
            return
        path = Path(ckpt_path)
        if not path.is_file():
            raise UserInputError(f"checkpoint {path}: no such file")
        try:
            # weights_only: a checkpoint is data; never run code pickled into a file we were handed.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for torn or foreign files
            raise UserInputError(
                f"checkpoint {path}: cannot be read ({type(err).__name__}); the file is truncated, "
                "corrupt or not a PyTorch checkpoint"
            ) from None
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise UserInputError(f"checkpoint {path}: not a Lightning checkpoint (no state_dict)")
        self._ckpt_checked = ckpt_path
        self._ckpt_contents = checkpoint

    _ckpt_checked: str | None = None
    _ckpt_contents: dict | None = None

    def before_fit(self) -> None:
        # Lightning versions without ``_parse_ckpt_path`` check here, once the classes exist.
        self._check_ckpt_path(self.config_init[self.subcommand].get("ckpt_path"))
        # Read and check the inputs now, before the Trainer's logger creates the run folder: a bad CSV or
        # missing IDX files must leave no empty version_N behind. Lightning's own calls later find the
        # data already there. Processes started by a launcher (DDP's children, torchrun, SLURM: LOCAL_RANK
        # is set) leave it to Lightning, whose prepare_data runs once per node before any setup.
        if "LOCAL_RANK" not in os.environ or self.trainer.world_size == 1:
            self.datamodule.prepare_data()
            self.datamodule.setup({"backtest": "fit", "export": "test"}.get(self.subcommand, self.subcommand))
        if self._ckpt_contents is not None:
            # What Lightning's restore would refuse later, refused before the run folder exists.
            self.model.check_checkpoint(self._ckpt_contents, source=f"checkpoint {self._ckpt_checked}")
            state = self._ckpt_contents.get(type(self.datamodule).__qualname__)
            if state:
                self.datamodule.load_state_dict(state)

    before_validate = before_test = before_predict = before_fit

    def before_export(self) -> None:
        # The export's own settings (format, folder, --ckpt_path, the installed extra) are checked first.
        config = self.config_init[self.subcommand]
        check_export_settings(config.get("export") or ExportSettings(), config.get("ckpt_path"))
        self.before_fit()

    def before_backtest(self) -> None:
        self.before_fit()  # the same inputs as fit, checked before anything is written

    # The arguments are RnnTrainer.backtest's and RnnTrainer.export's, which LightningCLI parsed.
    def backtest(self, model: LightningModule, **kwargs: Any) -> None:
        run_backtest(self, model, kwargs.get("datamodule"), kwargs.get("backtest") or BacktestSettings())

    def export(self, model: LightningModule, **kwargs: Any) -> None:
        settings = kwargs.get("export") or ExportSettings()
        run_export(self, model, kwargs.get("datamodule"), kwargs.get("ckpt_path"), settings)

    def fit(self, model: LightningModule, **kwargs) -> None:
        """``Trainer.fit``, after validating the untrained model when ``checkpoint.include_initial`` asks."""
        best = next((c for c in self.trainer.callbacks if isinstance(c, BestCheckpoint)), None)
        if best is not None and best.include_initial and not kwargs.get("ckpt_path"):
            self._enter_initial_model(best, model, kwargs.get("datamodule"))
        self.trainer.fit(model, **kwargs)

    def _enter_initial_model(self, best: BestCheckpoint, model: LightningModule, datamodule) -> None:
        """Validate the model as it is (``Trainer.validate``), save it and enter it as the best so far.

        Saved as epoch 0, step 0: the first validated epoch's checkpoint replaces it only if it scores
        better. Nothing to do without validation data (the monitor is then the training loss).
        """
        if not getattr(datamodule, "has_validation", False) or best.monitor not in ("auto", "val_loss"):
            return
        results = self.trainer.validate(model, datamodule=datamodule, verbose=False)
        # Metric states reset under validate's inference mode are inference tensors, which the fit's own
        # updates (outside inference mode) may not touch in place: reset them again out here.
        for metric in model.modules():
            if isinstance(metric, Metric):
                metric.reset()
        score = results[0].get("val_loss") if results else None
        if score is None or best.dirpath is None:
            return
        name = best.format_checkpoint_name({"epoch": 0, "step": 0, "val_loss": score})
        # "-initial": the first trained epoch's own file (epoch 0 too) must not take its name.
        filepath = os.path.join(best.dirpath, os.path.basename(name).removesuffix(".ckpt") + "-initial.ckpt")
        self.trainer.save_checkpoint(filepath, weights_only=False)  # resumable, like every other checkpoint
        best.adopt(filepath, torch.tensor(score))
        # The folder now holds that file, on purpose: not worth ModelCheckpoint's warning.
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


def main(args: list[str] | None = None) -> None:
    """Run ``rnn-lightning``; bad input ends in a one-line error and exit status 2, not a traceback."""
    # Our batches are plain tensors in memory: no DataLoader workers to suggest.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Lightning's own use of a torch API that torch deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # val_size: 0 means no validation batches, on purpose.
    warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
    # Our metrics are logged per epoch, which a long step interval (the KOSPI configs') does not delay.
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging interval")
    try:
        RnnLightningCLI(
            RecurrentModel,
            InMemoryDataModule,
            subclass_mode_data=True,
            trainer_class=RnnTrainer,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": True},
            parser_class=OneLineErrorParser,
            parser_kwargs={"prog": "rnn-lightning"},  # also under python -m rnn_lightning
            args=args,
        )
    except Exception as err:
        user_error = _user_input_error(err)
        if user_error is None or os.environ.get(DEBUG_ENV):
            raise
        print_error(user_error)
        raise SystemExit(2) from None
