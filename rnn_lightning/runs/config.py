"""One run's config: the arguments every subcommand parses, and :class:`RunConfig` (files plus dotted overrides)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
)
from torch.optim import Optimizer

from rnn_lightning.callbacks import PredictionPlots, PredictionWriter
from rnn_lightning.checkpointing import AtomicCheckpointIO, BestCheckpoint, last_checkpoint_defaults
from rnn_lightning.data.base import InMemoryDataModule
from rnn_lightning.errors import UserInputError, one_line_parser_error
from rnn_lightning.kinds import kind_of
from rnn_lightning.models.module import RecurrentModel

# What the data determines, linked from the data module into the model: no config states it twice.
LINKED_SIZES = ("input_size", "sequence_length", "num_outputs", "scaling_spec")
# Lightning defaults the project changes, where --print_config and the saved config.yaml show them.
TRAINER_DEFAULTS = {"plugins": [{"class_path": f"{AtomicCheckpointIO.__module__}.AtomicCheckpointIO"}]}
# The callback groups of one run's config (``--checkpoint.*`` ...), in the order the Trainer gets them.
CALLBACK_GROUPS = ("checkpoint", "last_checkpoint", "plots", "predictions")


# --- the arguments of one run ---------------------------------------------------------------------------


def add_default_arguments(parser: LightningArgumentParser) -> None:
    """``--seed_everything``, as LightningCLI adds it (True: a random seed, recorded in config.yaml)."""
    parser.add_argument(
        "--seed_everything",
        type=bool | int,
        default=True,
        help="an int seeds every random generator before the classes are built; true picks a random seed",
    )


def add_core_arguments(parser: LightningArgumentParser, trainer_class: type[Trainer] = Trainer) -> None:
    """``--trainer.*`` (with the project's defaults), ``--model.*`` and ``--data.*`` (any data module class)."""
    parser.add_lightning_class_args(trainer_class, "trainer")
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    parser.add_lightning_class_args(RecurrentModel, "model")
    parser.add_lightning_class_args(InMemoryDataModule, "data", subclass_mode=True)


def add_arguments(parser: LightningArgumentParser) -> None:
    """The project's own arguments: linked sizes, checkpoint and report callbacks, threads, speed-ups, optimizer."""
    for name in LINKED_SIZES:
        parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
    # The task the model's head serves is the data kind's (rnn_lightning.kinds).
    parser.link_arguments("data", "model.task", compute_fn=data_task, apply_on="instantiate")
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
    # Any torch optimizer and scheduler instead of the model's own Adam (model.lr, model.weight_decay).
    parser.add_optimizer_args((Optimizer,))
    parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
    LightningCLI.link_optimizers_and_lr_schedulers(parser)


def data_task(datamodule: Any) -> str:
    """The task of a data module's kind: what its model's head must serve."""
    return kind_of(datamodule).task


@lru_cache(maxsize=1)
def run_parser() -> LightningArgumentParser:
    """The parser of one run's config: what every subcommand of the CLI parses, less the subcommand's own keys."""
    parser = LightningArgumentParser(prog="rnn-lightning", exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML config file")
    add_default_arguments(parser)
    add_core_arguments(parser)
    add_arguments(parser)
    return parser


@lru_cache(maxsize=1)
def _top_level_keys() -> frozenset[str]:
    """The top-level keys of a run's config (``model``, ``trainer``, ``num_threads`` ...)."""
    return frozenset(vars(run_parser().get_defaults())) | {"config"}


@dataclass(frozen=True)
class RunConfig:
    """One run's parsed config: the namespace :func:`run_parser` parses (model, data, trainer, callbacks ...).

    Build one with :func:`load_config` (files plus overrides) or :meth:`from_namespace` (the CLI's parsed
    subcommand); :meth:`override` gives a changed copy, checked by the same parser.
    """

    namespace: Namespace

    @classmethod
    def from_namespace(cls, namespace: Namespace) -> RunConfig:
        """A subcommand's parsed namespace (the CLI's ``config[subcommand]``) without the subcommand's own keys."""
        values = namespace.clone()
        known = _top_level_keys()
        for key in list(vars(values)):
            if key not in known:  # --ckpt_path, --backtest.*, Trainer.fit's weights_only ...
                del values[key]
        return cls(values)

    def get(self, key: str, default: Any = None) -> Any:
        """A value by dotted key, e.g. ``config.get("model.hidden_size")``."""
        return self.namespace.get(key, default)

    def override(self, overrides: Mapping[str, Any] | Sequence[str] | None) -> RunConfig:
        """A copy with dotted keys changed (``{"model.hidden_size": 16}`` or ``["--model.hidden_size=16"]``).

        The values go through the parser, so a wrong key or type is the same one-line error as on the
        command line.
        """
        if not overrides:
            return self
        return RunConfig(_parse(_override_args(overrides), self.namespace))

    def as_dict(self) -> dict[str, Any]:
        """The config as plain values (what ``config.yaml`` holds)."""
        return self.namespace.as_dict()

    def dump(self) -> str:
        """The config as YAML that ``rnn-lightning fit --config`` accepts, None values included."""
        parser = run_parser()
        # A value set to null must stay (it is not the default). jsonargparse 4.49 renamed skip_none.
        try:
            return str(parser.dump(self.namespace, skip_unset=False))
        except TypeError:  # jsonargparse < 4.49
            return str(parser.dump(self.namespace, skip_none=False))


def _override_args(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    if isinstance(overrides, Mapping):
        # Strings as they are (a path, a name); everything else as JSON, which the parser reads as YAML.
        return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]
    return [str(arg) for arg in overrides]


def _parse(args: list[str], base: Namespace | None = None) -> Namespace:
    parser = run_parser()
    try:
        parsed: Namespace = parser.parse_args(args, namespace=base.clone() if base is not None else None)
        return parsed
    except Exception as err:  # jsonargparse raises ArgumentError with exit_on_error=False
        raise UserInputError(one_line_parser_error(str(err))) from None


def parse_args(args: Sequence[str]) -> RunConfig:
    """One run's config from command-line arguments, e.g. ``["--config", "configs/kospi_gru.yaml"]``."""
    return RunConfig(_parse([str(a) for a in args]))


def load_config(*paths: str | os.PathLike, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> RunConfig:
    """Read YAML config files (later ones win) and apply dotted ``overrides``, as ``--config A --config B --k=v``.

    Example::

        config = load_config("configs/kospi_gru.yaml", overrides={"trainer.max_epochs": 5})
    """
    args: list[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise UserInputError(f"config {path}: no such file")
        args += ["--config", str(path)]
    return RunConfig(_parse(args + _override_args(overrides or [])))
