"""The ``rnn-lightning`` command: LightningCLI wiring over the run factory (:mod:`rnn_lightning.runs`).

LightningCLI parses the command line (the same arguments :func:`rnn_lightning.runs.run_parser` parses),
turns argument errors into one line, and runs the subcommand; every subcommand builds its run with
:func:`rnn_lightning.runs.build`. ``main(args)`` is the entry point for the console script,
``python -m rnn_lightning`` and tests.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings, run_backtest
from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.errors import UserInputError, one_line_parser_error, print_error, user_input_error
from rnn_lightning.export import ExportSettings, run_export
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.tune.run import run_tune
from rnn_lightning.tune.search import TuneSettings

DEBUG_ENV = "RNN_LIGHTNING_DEBUG"
DESCRIPTION = (
    "rnn-lightning: train, evaluate, backtest, tune and export recurrent networks (RNN, LSTM, GRU, Bi-LSTM) "
    "on daily prices and row-sequence images"
)


class OneLineErrorParser(LightningArgumentParser):
    """Argument errors as one line instead of argparse's usage block (about 90 lines here).

    ``RNN_LIGHTNING_DEBUG=1`` restores jsonargparse's own output.
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get(DEBUG_ENV):
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        print_error(f"{one_line_parser_error(message)} (see {prog} --help)")
        raise SystemExit(2)


# The subcommands that are workflows of many runs: plain functions of the config, given no Run.
WORKFLOWS = ("backtest", "export", "tune")


class RnnTrainer(Trainer):
    """Lightning's Trainer plus the argument signatures of the project's workflow subcommands.

    LightningCLI builds every subcommand's arguments from the Trainer method of that name (there is no
    other public way to add a subcommand); the CLI's method of the same name runs the workflow, a plain
    function of the parsed config (:func:`rnn_lightning.backtest.run_backtest` ...). No Trainer of this
    class is built for a workflow.
    """

    def backtest(
        self, model: LightningModule, datamodule: Any = None, backtest: BacktestSettings | None = None
    ) -> None:
        """Walk-forward backtest: fit and test one config over rolling origins (rnn_lightning/backtest/)."""
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

    def tune(
        self,
        model: LightningModule,
        datamodule: Any = None,
        backtest: BacktestSettings | None = None,
        tune: TuneSettings | None = None,
    ) -> None:
        """Hyperparameter search scored by walk-forward backtests, with a verdict after searching (docs/tune.md)."""
        raise NotImplementedError("run through `rnn-lightning tune`")


class RnnLightningCLI(LightningCLI):
    """LightningCLI over :class:`RecurrentModel` and any :class:`InMemoryDataModule` (``class_path``).

    The arguments come from :mod:`rnn_lightning.runs`, and so does every run: this class only parses,
    checks the inputs before a run folder exists, and calls the factory.
    """

    run: runs.Run
    run_config: runs.RunConfig

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            **LightningCLI.subcommands(),
            "backtest": {"model", "datamodule"},
            "export": {"model", "datamodule"},
            "tune": {"model", "datamodule"},
        }

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        runs.add_default_arguments(parser)

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        runs.add_core_arguments(parser, self.trainer_class)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        runs.add_arguments(parser)

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before any data is read, and keep the config the source of the model's sizes.

        Lightning's version of this hook silently replaces the config's model arguments with the
        checkpoint's hyperparameters; here a checkpoint of other sizes or another task is an error
        instead (:meth:`RecurrentModel.check_checkpoint` names the differences).
        """
        subcommand = self.config.get("subcommand")
        if subcommand and subcommand not in WORKFLOWS:  # export reads and checks its own, after its settings
            self._read_ckpt(self.config[subcommand].get("ckpt_path"))

    _ckpt_read: str | None = None
    _ckpt_contents: dict | None = None

    def _read_ckpt(self, ckpt_path: str | None) -> None:
        special = ("last", "best", "hpc", "registry")  # resolved by Lightning itself
        if not ckpt_path or ckpt_path in special or ckpt_path == self._ckpt_read:
            return
        self._ckpt_contents = runs.read_checkpoint(ckpt_path)
        self._ckpt_read = ckpt_path

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        self.run_config = runs.prepare_process(runs.RunConfig.from_namespace(self.config[self.subcommand]))

    def instantiate_classes(self) -> None:
        """The subcommand's own arguments (``--ckpt_path``, ``--backtest.*`` ...), then the run, by the factory.

        A workflow (backtest, export, tune) gets no run: it builds its own from the config. LightningCLI
        then looks the subcommand up on ``self.trainer``, which for a workflow is the class holding its
        signature, not a Trainer.
        """
        if self.subcommand is None:
            raise UserInputError("name a subcommand: fit, validate, test, predict, backtest, tune or export")
        self.config_init = runs.instantiate(self.parser, self.config)
        if self.subcommand in WORKFLOWS:
            self.model, self.datamodule, self.trainer = None, None, self.trainer_class
            return
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        self.run = runs.build(self.run_config, self.subcommand, ckpt_path=ckpt_path, trainer_class=self.trainer_class)
        self.model, self.datamodule, self.trainer = self.run.model, self.run.datamodule, self.run.trainer

    def before_fit(self) -> None:
        # Lightning versions without ``_parse_ckpt_path`` check here, once the classes exist.
        self._read_ckpt(self.config_init[self.subcommand].get("ckpt_path"))
        runs.prepare_data(self.run, self._ckpt_contents, source=f"checkpoint {self._ckpt_read}")

    before_validate = before_test = before_predict = before_fit

    # Each method's arguments are those of the Trainer method of its name, which LightningCLI parsed.
    def fit(self, model: LightningModule, **kwargs: Any) -> None:
        runs.fit(self.run, kwargs.get("ckpt_path"))

    def validate(self, model: LightningModule, **kwargs: Any) -> None:
        runs.validate(self.run, kwargs.get("ckpt_path"), self._ckpt_contents)

    def test(self, model: LightningModule, **kwargs: Any) -> None:
        runs.test(self.run, kwargs.get("ckpt_path"), self._ckpt_contents)

    def predict(self, model: LightningModule, **kwargs: Any) -> None:
        runs.predict(self.run, kwargs.get("ckpt_path"), self._ckpt_contents)

    def backtest(self, model: LightningModule, **kwargs: Any) -> None:
        run_backtest(self.run_config, kwargs.get("backtest") or BacktestSettings())

    def tune(self, model: LightningModule, **kwargs: Any) -> None:
        run_tune(self.run_config, kwargs.get("backtest") or BacktestSettings(), kwargs.get("tune") or TuneSettings())

    def export(self, model: LightningModule, **kwargs: Any) -> None:
        run_export(self.run_config, kwargs.get("ckpt_path"), kwargs.get("export") or ExportSettings())


def main(args: list[str] | None = None) -> None:
    """Run ``rnn-lightning``; bad input ends in a one-line error and exit status 2, not a traceback."""
    try:
        RnnLightningCLI(
            RecurrentModel,
            InMemoryDataModule,
            subclass_mode_data=True,
            trainer_class=RnnTrainer,
            trainer_defaults=runs.TRAINER_DEFAULTS,
            save_config_callback=None,  # the run factory adds it, to the runs that write a folder
            auto_configure_optimizers=False,  # --optimizer/--lr_scheduler come from runs.add_arguments
            parser_class=OneLineErrorParser,
            parser_kwargs={"prog": "rnn-lightning", "description": DESCRIPTION},  # also under python -m
            args=args,
        )
    except Exception as err:
        user_error = user_input_error(err)
        if user_error is None or os.environ.get(DEBUG_ENV):
            raise
        print_error(user_error)
        raise SystemExit(2) from None
