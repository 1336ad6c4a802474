"""Running a built run: reading and checking its inputs before a run folder exists, then one Trainer call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torchmetrics import Metric

from rnn_lightning.checkpointing import BestCheckpoint
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.runs.build import Run, find_callback
from rnn_lightning.runs.runtime import quiet_warnings

STAGES = ("fit", "validate", "test", "predict")


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
