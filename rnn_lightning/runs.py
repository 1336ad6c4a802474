"""The run factory: one config in, a fresh model, data module, callbacks and Trainer out, then one Trainer call.

Every way of running the project goes through here, so they all build a run the same way:

* ``rnn-lightning fit|validate|test|predict|backtest|export`` (:mod:`rnn_lightning.cli`) parses the command
  line with :func:`add_arguments` and hands each subcommand's config to :func:`build`;
* the backtest (:mod:`rnn_lightning.backtest`) builds one run per fold from the same config;
* the Python API (:mod:`rnn_lightning.api`) loads a YAML file plus dotted overrides with :func:`load_config`.

A config is a :class:`RunConfig`: the parser of one run's arguments and the namespace it parsed. The parser
is the same for all of them (:func:`run_parser`), built from the same three steps the CLI's subcommands are
built from, so a run built from Python is the run the command line builds.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionConfigFile, Namespace
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.accelerators import Accelerator, CPUAccelerator, CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
    SaveConfigCallback,
)
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer
from torchmetrics import Metric

from rnn_lightning import speedups
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
STAGES = ("fit", "validate", "test", "predict")
# Lightning's warnings that say nothing a user of these runs can act on; filtered around each Trainer call
# only (:func:`quiet_warnings`), never process-wide.
EXPECTED_WARNINGS = (
    # Batches are tensors already in memory: no DataLoader workers to suggest.
    ".*does not have many workers.*",
    # Lightning's own use of a torch API that torch deprecated.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # val_size: 0 means no validation batches, on purpose.
    "Total length of `list` across ranks is zero",
    # Metrics are logged per epoch, which a long step interval (the KOSPI configs') does not delay.
    "The number of training batches .* is smaller than the logging interval",
    # A resumed fit or an include_initial checkpoint puts files into the folder on purpose.
    "Checkpoint directory .* exists and is not empty",
    # predictions.csv matches rows to dates by order: in-memory batches carry no indices to infer.
    "Couldn't infer the batch indices",
)


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
            return parser.dump(self.namespace, skip_unset=False)
        except TypeError:  # jsonargparse < 4.49
            return parser.dump(self.namespace, skip_none=False)


def _override_args(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    if isinstance(overrides, Mapping):
        # Strings as they are (a path, a name); everything else as JSON, which the parser reads as YAML.
        return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()]
    return [str(arg) for arg in overrides]


def _parse(args: list[str], base: Namespace | None = None) -> Namespace:
    parser = run_parser()
    try:
        return parser.parse_args(args, namespace=base.clone() if base is not None else None)
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


# --- process-wide settings, once ------------------------------------------------------------------------


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger/litmodels" lines; every other message stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def prepare_process(config: RunConfig) -> RunConfig:
    """Apply the process-wide settings a config asks for, before any data is read; returns the config to build.

    Threads (``num_threads``), the process-wide speed-ups (allocator, NVML check) and the filter that drops
    Lightning's advertisements. ``speedups: false`` (or ``RNN_LIGHTNING_SPEEDUPS=0``) also turns the model's
    speed-up arguments off (:data:`rnn_lightning.speedups.MODEL_OFF`), in the returned config, where the saved
    ``config.yaml`` shows them.
    """
    enabled = speedups.switch_allowed(bool(config.get("speedups", True)))
    apply_process_settings(enabled, config.get("num_threads"))
    if enabled:
        return config
    values = config.namespace.clone()
    for key, value in speedups.MODEL_OFF.items():
        values[f"model.{key}"] = value
    values["speedups"] = False
    return RunConfig(values)


@cache
def apply_process_settings(speedups_enabled: bool, threads: int | None) -> None:
    """The process-wide part of :func:`prepare_process`, once per process and settings.

    A second run with the same settings in one process (a notebook calling ``api.fit`` twice, a search's
    trials) changes nothing global: no allocator call, no thread change, no second logger filter.
    """
    speedups.apply_process(speedups_enabled)
    if threads:
        torch.set_num_threads(threads)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertisement) for f in logger.filters):
        logger.addFilter(_NoAdvertisement())


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """:data:`EXPECTED_WARNINGS` filtered for the duration of one Trainer call; the process's filters stay."""
    with warnings.catch_warnings():
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's per-Trainer info lines (GPU available, max_epochs reached ...) off, for workflows of many fits."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- building a run -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run's objects, built by :func:`build` from a :class:`RunConfig`.

    Attributes:
        config: What it was built from.
        model: A fresh :class:`~rnn_lightning.models.module.RecurrentModel`.
        datamodule: A fresh data module (or the one passed to :func:`build`).
        trainer: The Trainer, with the config's callbacks and the project's checkpoint callbacks.
        stage: ``fit``, ``validate``, ``test``, ``predict`` or a workflow's name.
        results: What the last Trainer call returned (metrics of validate/test, predictions of predict).
    """

    config: RunConfig
    model: RecurrentModel
    datamodule: LightningDataModule
    trainer: Trainer
    stage: str
    results: Any = field(default=None, repr=False)

    @property
    def best_checkpoint(self) -> str | None:
        """The best checkpoint's path after a fit (None before, or without one)."""
        best = find_callback(self.trainer, BestCheckpoint)
        return (best.best_model_path or None) if best is not None else None

    @property
    def last_checkpoint(self) -> str | None:
        """``last.ckpt`` after a fit, when the config writes one."""
        # The ``last_checkpoint`` group: a ModelCheckpoint without a monitor, whose latest file is its "best".
        last = next((c for c in self.trainer.callbacks if type(c) is ModelCheckpoint), None)
        return (last.best_model_path or None) if last is not None else None

    @property
    def log_dir(self) -> Path | None:
        """The run folder (``lightning_logs/version_N``), once the logger has made it."""
        return Path(self.trainer.log_dir) if self.trainer.log_dir else None

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics last logged, as floats (e.g. ``val_loss``, ``test_rmse``)."""
        return {k: float(v) for k, v in self.trainer.callback_metrics.items()}


def find_callback(trainer: Trainer, kind: type) -> Any:
    """The trainer's first callback of type ``kind``, or None."""
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


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
    return TensorBoardLogger(save_dir=root, name="lightning_logs", version=int(run_dir.name.removeprefix("version_")))


def _seed(config: RunConfig, offset: int = 0) -> None:
    seed = config.get("seed_everything")
    if seed is False or seed is None:
        return
    if seed is True:
        seed_everything(workers=True, verbose=False)
    else:
        seed_everything(int(seed) + offset, workers=True, verbose=False)


def build(
    config: RunConfig,
    stage: str = "fit",
    *,
    datamodule: LightningDataModule | None = None,
    ckpt_path: str | None = None,
    seed_offset: int = 0,
    plots: bool = True,
    save_config: bool = True,
    trainer_class: type[Trainer] = Trainer,
    **trainer_kwargs: Any,
) -> Run:
    """A fresh run: model, data module, callbacks and Trainer, as ``rnn-lightning <stage>`` builds them.

    Args:
        config: The run's config.
        stage: ``fit``, ``validate``, ``test`` or ``predict``; or a workflow's name (``backtest``,
            ``export``), which gets fit's callbacks.
        datamodule: A data module to use instead of the config's (a backtest fold's view of read data).
        ckpt_path: The checkpoint a fit resumes from: a fit resumed from ``lightning_logs/version_N``
            continues in that folder (:func:`resume_logger`).
        seed_offset: Added to ``seed_everything`` before the model is built (a backtest's fold index).
        plots: Keep the config's plot callback (a fold's plot would show its validation period only).
        save_config: Write ``config.yaml`` into the run folder (Lightning's ``SaveConfigCallback``).
        trainer_class: The Trainer class (the CLI's adds the signatures of its own subcommands).
        **trainer_kwargs: Trainer arguments that replace the config's (``logger``, ``max_epochs`` ...).

    The checkpoint callbacks only take part in a fit.
    """
    _seed(config, seed_offset)
    init = instantiate(run_parser(), config.namespace)
    model: RecurrentModel = init.model
    optimizer, scheduler = init.get("optimizer"), init.get("lr_scheduler")
    if optimizer:
        model.use_optimizer(_as_dict(optimizer), _as_dict(scheduler) if scheduler else None)
    elif scheduler:
        raise UserInputError("--lr_scheduler needs --optimizer (the model's own Adam takes no scheduler)")
    callbacks: list[Callback] = [init[group] for group in CALLBACK_GROUPS]
    fitting = stage not in ("validate", "test", "predict")
    if not fitting:
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    if stage != "predict":
        # It writes predict's outputs only; elsewhere it would just be called at every hook of every step.
        callbacks = [c for c in callbacks if not isinstance(c, PredictionWriter)]
    if not plots:
        callbacks = [c for c in callbacks if not isinstance(c, PredictionPlots)]
    trainer_config = dict(init.trainer)
    # A copy, taken now: the Trainer appends its default callbacks (the progress bar among them) to the
    # very list it is given.
    configured = trainer_config.get("callbacks") or []
    configured = list(configured) if isinstance(configured, list) else [configured]
    if stage == "fit" and "logger" not in trainer_kwargs:
        logger = resume_logger(ckpt_path, trainer_config.get("logger"), trainer_config.get("default_root_dir"))
        if logger is not None:
            trainer_kwargs["logger"] = logger  # for this process only; the saved config.yaml stays as given
    trainer_config.update(trainer_kwargs)
    extra = list(callbacks)
    if save_config and not trainer_config.get("fast_dev_run"):
        extra.append(SaveConfigCallback(run_parser(), config.namespace, overwrite=True))
    trainer_config["callbacks"] = configured + extra
    trainer = trainer_class(**trainer_config)
    speedups.pace_progress_bar(trainer, configured, enabled=bool(config.get("speedups", True)))
    data = datamodule if datamodule is not None else init.data
    return Run(config=config, model=model, datamodule=data, trainer=trainer, stage=stage)


def build_model(config: RunConfig) -> tuple[RecurrentModel, LightningDataModule]:
    """A fresh model and its data module (not read), linked as :func:`build` links them; no Trainer."""
    init = instantiate(run_parser(), config.namespace)
    return init.model, init.data


def build_data(config: RunConfig, stage: str | None = "fit") -> LightningDataModule:
    """The config's data module alone, read and checked for ``stage`` (None: built, not read).

    What a workflow of many fits starts from (a backtest's folds, a search's trials, an export's check
    samples): no model and no Trainer are built for it. Bad input is a one-line error, before any run
    folder exists.
    """
    spec = config.get("data")
    if spec is None or not spec.get("class_path"):
        raise UserInputError("the config names no data module (data.class_path)")
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    data_class = getattr(importlib.import_module(module_name), class_name)
    init_args = spec.get("init_args")
    kwargs = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args or {})
    datamodule: LightningDataModule = data_class(**kwargs)
    if stage is not None:
        datamodule.prepare_data()
        datamodule.setup(stage)
    return datamodule


@dataclass(frozen=True)
class Placement:
    """Where a config's Trainer would train: its accelerator and how many processes (world size)."""

    accelerator: Accelerator
    world_size: int


def placement(config: RunConfig) -> Placement:
    """The accelerator and world size ``trainer.accelerator``/``devices``/``num_nodes`` ask for, with no Trainer.

    ``auto`` is resolved as Lightning resolves it (a CUDA GPU, then Apple's MPS, then the CPU; all of the
    GPUs, one CPU process), through each accelerator's public ``is_available``. What a workflow needs to
    decide whether its folds or trials may run in forked CPU processes.
    """
    name = config.get("trainer.accelerator") or "auto"
    if isinstance(name, Accelerator):
        accelerator = name
    elif name == "auto":
        accelerator = next((a() for a in (CUDAAccelerator, MPSAccelerator) if a.is_available()), CPUAccelerator())
    else:
        chosen = {"cpu": CPUAccelerator, "gpu": CUDAAccelerator, "cuda": CUDAAccelerator, "mps": MPSAccelerator}
        accelerator = chosen.get(str(name), CUDAAccelerator)()  # tpu, hpu ...: not a CPU either way
    devices = config.get("trainer.devices", "auto")
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, int) or str(devices).lstrip("-").isdigit():
        count = int(devices)
        if count == -1:
            count = accelerator.auto_device_count()
    else:  # "auto"
        count = 1 if isinstance(accelerator, CPUAccelerator) else accelerator.auto_device_count()
    return Placement(accelerator, max(1, count) * int(config.get("trainer.num_nodes") or 1))


def new_run_dir(config: RunConfig) -> Path:
    """The folder a workflow writes into, as the config's Trainer would name it (not created here).

    The next ``lightning_logs/version_N`` under ``trainer.default_root_dir`` (the working directory when
    unset), as Lightning's default TensorBoard logger numbers it; ``trainer.logger: false`` writes into
    the root itself, as Lightning's ``Trainer.log_dir`` does without a logger.
    """
    root = config.get("trainer.default_root_dir") or os.getcwd()
    logger = config.get("trainer.logger")
    if logger is False:
        return Path(root)
    if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
        args = logger.get("init_args") or Namespace()
        chosen = TensorBoardLogger(
            save_dir=args.get("save_dir") or root, name=args.get("name", "lightning_logs"), version=args.get("version")
        )
        return Path(chosen.log_dir)
    return Path(TensorBoardLogger(save_dir=root, name="lightning_logs").log_dir)


def instantiate(parser: LightningArgumentParser, namespace: Namespace) -> Namespace:
    """The classes a parsed config names, built (``instantiate``; ``instantiate_classes`` before jsonargparse 4.49)."""
    build_all = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return build_all(namespace)


def _as_dict(value: Any) -> dict[str, Any]:
    return value.as_dict() if isinstance(value, Namespace) else dict(value)


# --- running it -----------------------------------------------------------------------------------------


def prepare_data(run: Run, checkpoint: dict[str, Any] | None = None, source: str = "the checkpoint") -> None:
    """Read and check the inputs now, before the Trainer's logger creates the run folder.

    A bad CSV or missing IDX files then leave no empty ``version_N`` behind; Lightning's own calls later find
    the data already there. A checkpoint's contents, when given, are checked against the model and the data
    (what Lightning's restore would refuse later, refused before the run folder exists). Processes started
    by a launcher (DDP's children, torchrun, SLURM: ``LOCAL_RANK`` is set) leave the data to Lightning,
    whose ``prepare_data`` runs once per node before any setup.
    """
    if "LOCAL_RANK" not in os.environ or run.trainer.world_size == 1:
        run.datamodule.prepare_data()
        run.datamodule.setup({"backtest": "fit", "tune": "fit", "export": "test"}.get(run.stage, run.stage))
    if checkpoint is not None:
        check_checkpoint(run.model, run.datamodule, checkpoint, source)


def check_checkpoint(
    model: RecurrentModel, datamodule: LightningDataModule, checkpoint: dict[str, Any], source: str
) -> None:
    """Refuse a checkpoint of other sizes, another task or other data settings (one line each)."""
    model.check_checkpoint(checkpoint, source=source)
    # Lightning files a data module's state under its class name; a data module that was renamed
    # lists its old names (DailyPricesDataModule: KospiDataModule), so older checkpoints still load.
    names = [type(datamodule).__qualname__, *getattr(datamodule, "former_names", ())]
    state = next((checkpoint[n] for n in names if checkpoint.get(n)), None)
    if state:
        datamodule.load_state_dict(state)


def read_checkpoint(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint file's contents, or a one-line :class:`UserInputError` naming what is wrong with it."""
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
    return checkpoint


def fit(run: Run, ckpt_path: str | None = None) -> Run:
    """``Trainer.fit``, after validating the untrained model when ``checkpoint.include_initial`` asks."""
    best = find_callback(run.trainer, BestCheckpoint)
    with quiet_warnings():
        if best is not None and best.include_initial and not ckpt_path:
            _enter_initial_model(run, best)
        run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=ckpt_path)
    return run


def load_weights(run: Run, checkpoint: dict[str, Any] | None) -> None:
    """A checkpoint's weights (and the scaling it carries) into the run's model, for validate, test or predict.

    The checkpoint was read and checked against the model and the data already (:func:`prepare_data`).
    Loaded here rather than through the Trainer's ``ckpt_path``, which would also restore the fit's
    checkpoint callbacks into a run that has none and warn about each: an evaluation needs the weights only.
    """
    if checkpoint is not None:
        run.model.load_state_dict(checkpoint["state_dict"])


def _evaluation(run: Run, call: Any, ckpt_path: str | None, checkpoint: dict[str, Any] | None, **kwargs: Any) -> Run:
    if checkpoint is not None:
        load_weights(run, checkpoint)
        ckpt_path = None
    with quiet_warnings():
        run.results = call(run.model, datamodule=run.datamodule, ckpt_path=ckpt_path, **kwargs)
    return run


def validate(
    run: Run, ckpt_path: str | None = None, checkpoint: dict[str, Any] | None = None, verbose: bool = True
) -> Run:
    """``Trainer.validate`` of a checkpoint (its contents, or a path Lightning resolves); metrics in ``run.results``."""
    return _evaluation(run, run.trainer.validate, ckpt_path, checkpoint, verbose=verbose)


def test(run: Run, ckpt_path: str | None = None, checkpoint: dict[str, Any] | None = None, verbose: bool = True) -> Run:
    """``Trainer.test`` of a checkpoint (its contents, or a path Lightning resolves); metrics in ``run.results``."""
    return _evaluation(run, run.trainer.test, ckpt_path, checkpoint, verbose=verbose)


def predict(run: Run, ckpt_path: str | None = None, checkpoint: dict[str, Any] | None = None) -> Run:
    """``Trainer.predict`` (``predictions.csv`` and plots by the config's callbacks); outputs in ``run.results``."""
    return _evaluation(run, run.trainer.predict, ckpt_path, checkpoint)


def _enter_initial_model(run: Run, best: BestCheckpoint) -> None:
    """Validate the model as it is (``Trainer.validate``), save it and enter it as the best so far.

    Saved as epoch 0, step 0: the first validated epoch's checkpoint replaces it only if it scores
    better. Nothing to do without validation data (the monitor is then the training loss).
    """
    model, trainer = run.model, run.trainer
    if not getattr(run.datamodule, "has_validation", False) or best.monitor not in ("auto", "val_loss"):
        return
    results = trainer.validate(model, datamodule=run.datamodule, verbose=False)
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
    trainer.save_checkpoint(filepath, weights_only=False)  # resumable, like every other checkpoint
    best.adopt(filepath, torch.tensor(score))
