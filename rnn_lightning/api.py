"""The Python API: what the ``rnn-lightning`` subcommands do, as functions of a config (docs/python-api.md).

Every function takes a :class:`~rnn_lightning.runs.RunConfig` from :func:`load_config` (YAML files plus
dotted overrides) and builds its run with the run factory (:mod:`rnn_lightning.runs`), exactly as the
command line does; the results come back as Python values instead of printed lines::

    import rnn_lightning as rl

    config = rl.load_config("configs/kospi_gru.yaml", overrides={"trainer.max_epochs": 20})
    run = rl.fit(config)
    metrics = rl.test(config, run.best_checkpoint)
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings, run_backtest
from rnn_lightning.callbacks import concat_predictions
from rnn_lightning.errors import UserInputError
from rnn_lightning.export import ExportSettings, run_export
from rnn_lightning.kinds import kind_of
from rnn_lightning.runs import Run, RunConfig, load_config
from rnn_lightning.tune.run import run_tune
from rnn_lightning.tune.search import TuneSettings

__all__ = ["Run", "RunConfig", "backtest", "export", "fit", "load_config", "predict", "test", "tune", "validate"]


def _checked(
    config: RunConfig, stage: str, ckpt_path: str | os.PathLike | None = None
) -> tuple[Run, str | None, dict[str, Any] | None]:
    """A run of ``config`` for ``stage`` with its inputs read and checked (and the checkpoint against them)."""
    config = runs.prepare_process(config)
    path = os.fspath(ckpt_path) if ckpt_path is not None else None
    checkpoint = runs.read_checkpoint(path) if path else None
    run = runs.build(config, stage, ckpt_path=path)
    runs.prepare_data(run, checkpoint, source=f"checkpoint {path}")
    return run, path, checkpoint


def fit(config: RunConfig, ckpt_path: str | os.PathLike | None = None) -> Run:
    """Train (``rnn-lightning fit``; ``ckpt_path`` resumes); see ``best_checkpoint``, ``log_dir``, ``metrics``."""
    run, path, _ = _checked(config, "fit", ckpt_path)
    return runs.fit(run, path)


def validate(config: RunConfig, ckpt_path: str | os.PathLike) -> dict[str, float]:
    """Validation metrics of a checkpoint (``rnn-lightning validate``), e.g. ``{"val_loss": ...}``."""
    run, path, checkpoint = _checked(config, "validate", ckpt_path)
    return dict(runs.validate(run, path, checkpoint, verbose=False).results[0])


def test(config: RunConfig, ckpt_path: str | os.PathLike) -> dict[str, float]:
    """Test metrics of a checkpoint (``rnn-lightning test``), e.g. ``{"test_rmse": ..., "test_naive_rmse": ...}``."""
    run, path, checkpoint = _checked(config, "test", ckpt_path)
    return dict(runs.test(run, path, checkpoint, verbose=False).results[0])


def predict(config: RunConfig, ckpt_path: str | os.PathLike) -> pd.DataFrame:
    """The rows ``predictions.csv`` holds (``rnn-lightning predict``): one per window or image, in the data's units."""
    run, path, checkpoint = _checked(config, "predict", ckpt_path)
    outputs = runs.predict(run, path, checkpoint).results
    return kind_of(run.datamodule).report.table(run.datamodule, concat_predictions(outputs))


def backtest(config: RunConfig, **settings: Any) -> dict[str, Any]:
    """A walk-forward backtest (``rnn-lightning backtest``); ``settings`` are ``--backtest.*`` by name.

    Returns:
        ``summary.json``'s contents, and ``run_dir``: the run folder with ``backtest.csv``, ``folds.csv`` ...
    """
    known = {f.name for f in fields(BacktestSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserInputError(f"unknown backtest setting(s) {unknown}; choose from {sorted(known)}")
    return run_backtest(runs.prepare_process(config), BacktestSettings(**settings))


def tune(config: RunConfig, backtest: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
    """A search with its verdict (``rnn-lightning tune``); ``settings`` are ``--tune.*``, ``backtest`` ``--backtest.*``.

    Returns:
        ``summary.json``'s contents (the verdict among them) and ``run_dir``, the run folder with
        ``trials.csv``, ``losses.csv``, ``best_config.yaml`` ...
    """
    for given, kind in ((settings, TuneSettings), (backtest or {}, BacktestSettings)):
        known = {f.name for f in fields(kind)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UserInputError(f"unknown {kind.__name__} {unknown}; choose from {sorted(known)}")
    return run_tune(runs.prepare_process(config), BacktestSettings(**(backtest or {})), TuneSettings(**settings))


def export(config: RunConfig, ckpt_path: str | os.PathLike, path: str | os.PathLike, format: str = "onnx") -> Path:
    """Write a checkpoint as one ONNX or TorchScript file, checked against predict (``rnn-lightning export``)."""
    settings = ExportSettings(format=format, path=os.fspath(path))  # type: ignore[arg-type]
    return run_export(runs.prepare_process(config), os.fspath(ckpt_path), settings)
