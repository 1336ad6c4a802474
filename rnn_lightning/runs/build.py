"""Building a run from a config: model, data module, callbacks, Trainer; or only the parts a workflow needs."""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.accelerators import Accelerator, CPUAccelerator, CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import (
    LightningArgumentParser,
    SaveConfigCallback,
)
from lightning.pytorch.loggers import TensorBoardLogger

from rnn_lightning import speedups
from rnn_lightning.callbacks import PredictionPlots, PredictionWriter
from rnn_lightning.checkpointing import BestCheckpoint
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.runs.config import CALLBACK_GROUPS, LINKED_SIZES, RunConfig, run_parser

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
    if datamodule is not None:
        model = sized_for(model, datamodule, config, seed_offset)
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


def sized_for(model: RecurrentModel, datamodule: Any, config: RunConfig, seed_offset: int = 0) -> RecurrentModel:
    """``model``, or where ``datamodule``'s linked sizes differ from the config's data's, the model built for them.

    A backtest fold of a panel that leaves out the series too short for it has fewer series than the
    config's data (the per-series buffers and embedding follow); the model is then built again, from the
    same seed, with every other argument as the config gave it.
    """
    sizes = {name: getattr(datamodule, name) for name in LINKED_SIZES}
    if all(model.hparams.get(name) == value for name, value in sizes.items()):
        return model
    _seed(config, seed_offset)
    return type(model)(**{**dict(model.hparams), **sizes})


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
    built: Namespace = build_all(namespace)
    return built


def _as_dict(value: Any) -> dict[str, Any]:
    return value.as_dict() if isinstance(value, Namespace) else dict(value)
