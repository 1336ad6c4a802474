"""Running a backtest: every fold is a run of the factory (:func:`rnn_lightning.runs.build`) on a view of the data.

How a run goes (:func:`run_backtest`):

1. :func:`~rnn_lightning.backtest.plan.plan_folds` turns the settings into folds, or a one-line
   :class:`UserInputError`, before any run folder exists.
2. Each fold gets a fresh model, Trainer and checkpoint callbacks from the run factory, built from the
   run's config as ``fit`` builds them (``--optimizer`` included), seeded with ``seed_everything + fold``,
   and a data module that is a view of the read data cut to the fold's training rows.
3. The fold's best checkpoint forecasts its test windows; the rows go to ``fold_KK/predictions.csv``.
   With several workers (``refit scratch``, CPU), forked processes run steps 2-3 for every N-th fold each
   (:func:`_run_workers`); the folds are seeded by their index, so the outputs do not change.
4. :func:`~rnn_lightning.backtest.outputs.write_outputs` joins every fold's rows into the run folder's
   files. ``--backtest.merge`` runs only this step over the fold folders of several shard runs;
   ``--backtest.resume DIR`` runs steps 2-3 for the folds a stopped run left unfinished in ``DIR`` (its
   finished ones are read back, their ``fold.json`` signed by this run's config, data and settings), then 4.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from rnn_lightning import runs
from rnn_lightning.backtest.outputs import (
    FOLD_FILE,
    FOLD_ROWS,
    check_merge,
    clear_unfinished,
    fold_dir_name,
    read_fold_dirs,
    resume_line,
    resumed_folds,
    summary_lines,
    write_fold_file,
    write_outputs,
)
from rnn_lightning.backtest.panel_run import run_panel_backtest
from rnn_lightning.backtest.plan import (
    BacktestSettings,
    Fold,
    check_settings,
    fold_dates,
    fold_view,
    parse_shard,
    plan_folds,
    resolve_workers,
    shard_folds,
    window_offset,
)
from rnn_lightning.backtest.signing import config_signature
from rnn_lightning.backtest.stats import fold_metrics
from rnn_lightning.checkpointing import BestCheckpoint
from rnn_lightning.errors import UserInputError
from rnn_lightning.kinds import kind_of
from rnn_lightning.workers import run_forked

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

    from rnn_lightning.data.daily import DailyPricesDataModule


def signature(config: runs.RunConfig, source: DailyPricesDataModule, settings: BacktestSettings) -> str:
    """A backtest's signature: config (less :data:`UNSIGNED_KEYS`), settings and every close and feature."""
    return config_signature(config, settings, (source.close.numpy().tobytes(), source.raw_features.numpy().tobytes()))


def _best_state(trainer: Trainer) -> dict[str, torch.Tensor] | None:
    best = runs.find_callback(trainer, BestCheckpoint)
    path = best.best_model_path if best is not None else ""
    if not path:
        return None
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return state


def _fold_rows(model: Any, source: DailyPricesDataModule, fold: Fold) -> pd.DataFrame:
    """The fold's test days: date, fold, actual, predicted (the best model's), naive (today's close)."""
    from rnn_lightning.reports.common import predict_all

    test = source.windows(slice(fold.origin, fold.stop))
    out = predict_all(model, test)
    first = {k: (v[:, 0] if v.dim() == 2 else v) for k, v in out.items() if k in ("prediction", "actual", "naive")}
    days = source.dates.iloc[fold.origin + source.sequence_length : fold.stop + source.sequence_length]
    return pd.DataFrame(
        {
            "date": pd.to_datetime(days).dt.strftime("%Y-%m-%d").to_numpy(),
            "fold": fold.index,
            "actual": first["actual"].double().numpy(),
            "predicted": first["prediction"].double().numpy(),
            "naive": test.ref.double().numpy(),
        }
    )


@dataclass(frozen=True)
class BacktestRun:
    """What every fold of one backtest shares: the config, the read data, the run folder and the settings."""

    config: runs.RunConfig
    source: DailyPricesDataModule
    run_dir: Path
    settings: BacktestSettings
    signature: str
    trainer_overrides: tuple[tuple[str, Any], ...] = ()


def folds_for(source: DailyPricesDataModule, settings: BacktestSettings) -> list[Fold]:
    """The folds of ``settings`` over the read data ``source`` (a one-line error when it cannot hold them)."""
    return plan_folds(
        source.num_windows,
        settings,
        source.val_size,
        gap=window_offset(source) - source.sequence_length,
        source=source.csv_path,
    )


def fold_results(
    config: runs.RunConfig,
    source: DailyPricesDataModule,
    settings: BacktestSettings,
    run_dir: Path,
    folds: list[Fold] | None = None,
    **trainer_overrides: Any,
) -> Iterator[tuple[Fold, pd.DataFrame]]:
    """Fit the folds one after another in this process and yield each one's test days as it finishes.

    What a search needs from a backtest (:mod:`rnn_lightning.tune`): the same folds and fits as
    ``rnn-lightning backtest``, one fold at a time, so that a hopeless configuration can stop early.
    ``trainer_overrides`` replace the config's Trainer arguments for every fold (``enable_progress_bar``).
    """
    chosen = folds_for(source, settings) if folds is None else folds
    run = BacktestRun(config, source, run_dir, settings, "", tuple(trainer_overrides.items()))
    for fold in chosen:
        rows, _ = _fit_fold(run, fold, None)
        yield fold, rows


def _fit_fold(
    run: BacktestRun, fold: Fold, warm_state: dict[str, torch.Tensor] | None
) -> tuple[pd.DataFrame, dict[str, torch.Tensor] | None]:
    """Fit one fold with a fresh run from the factory, and forecast its test days with its best model."""
    from lightning.pytorch.loggers import TensorBoardLogger

    fold_dir = run.run_dir / fold_dir_name(fold.index)
    kwargs: dict[str, Any] = dict(run.trainer_overrides)
    if run.config.get("trainer.logger") is False:
        kwargs.update(logger=False, default_root_dir=str(fold_dir))
    else:
        kwargs["logger"] = TensorBoardLogger(
            save_dir=str(run.run_dir), name="", version=fold_dir.name, default_hp_metric=False
        )
    if warm_state is not None and run.settings.warm_epochs is not None:
        kwargs["max_epochs"] = run.settings.warm_epochs
    # The fold's plots would draw its validation period only; the run's plot covers every fold.
    fold_run = runs.build(
        run.config,
        "fit",
        datamodule=fold_view(run.source, fold),
        seed_offset=fold.index,
        plots=False,
        save_config=False,
        **kwargs,
    )
    if warm_state is not None:
        fold_run.model.load_state_dict(warm_state)  # the scaling buffers are replaced by this fold's in setup
    runs.fit(fold_run)
    best = _best_state(fold_run.trainer)
    if best is not None:
        fold_run.model.load_state_dict(best)
    return _fold_rows(fold_run.model, run.source, fold), best


def _backtest_fold(
    run: BacktestRun, fold: Fold, warm_state: dict[str, torch.Tensor] | None
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor] | None]:
    """Fit and test one fold, write its folder (``predictions.csv``, ``fold.json``) and print its line."""
    rows, best = _fit_fold(run, fold, warm_state)
    fold_dir = run.run_dir / fold_dir_name(fold.index)
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_fold_file(fold_dir / FOLD_ROWS, rows.to_csv(index=False))  # full precision: merge rebuilds the outputs
    metrics = fold_metrics(rows)
    dates = fold_dates(run.source, fold)
    settings = {k: v for k, v in asdict(run.settings).items() if k not in ("workers", "resume")}
    meta: dict[str, Any] = {
        "fold": fold.index,
        "windows": asdict(fold),
        "dates": dates,
        "rmse": metrics["rmse"],
        "naive_rmse": metrics["naive_rmse"],
        # How the folds were spread over processes is not a setting of their results.
        "settings": settings | {"shard": None, "merge": None},
        "signature": run.signature,
    }
    write_fold_file(fold_dir / FOLD_FILE, json.dumps(meta, indent=2) + "\n")  # last: the fold is finished
    print(
        f"backtest: fold {fold.index} ({dates['test_start']}..{dates['test_end']}): "
        f"RMSE {metrics['rmse']:,.3f}, naive {metrics['naive_rmse']:,.3f}, "
        f"ratio {metrics['rmse_ratio']:.4f}",
        flush=True,
    )
    return fold_dir, meta, best


def _run_folds(run: BacktestRun, folds: list[Fold]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Run ``folds`` one after another in this process; with ``refit warm`` each starts from the last's best."""
    warm: dict[str, torch.Tensor] | None = None
    fold_dirs, metas = [], []
    with runs.quiet_lightning():
        for fold in folds:
            fold_dir, meta, best = _backtest_fold(run, fold, warm if run.settings.refit == "warm" else None)
            warm = best
            fold_dirs.append(fold_dir)
            metas.append(meta)
    return fold_dirs, metas


def _run_workers(run: BacktestRun, folds: list[Fold], workers: int) -> tuple[list[Path], list[dict[str, Any]]]:
    """Run ``folds`` in ``workers`` forked processes (every ``workers``-th fold each) and read their folders.

    Forked, so that every worker starts with this process's imports, config and read data: nothing is
    parsed, imported or read again. Each fold is seeded by its index and writes only its own folder, so the
    outputs are those of one process. A failed worker ends the run with a one-line error (exit status 1,
    or 2 for a bad input); the folders of the folds that finished stay.
    """
    run_forked(
        "backtest",
        _run_folds,
        [(run, folds[w::workers]) for w in range(workers)],
        after_failure=f"the finished folds' folders are in {run.run_dir}",
    )
    wanted = {fold.index for fold in folds}
    found = [(d, m) for d, m in read_fold_dirs([run.run_dir]) if m["fold"] in wanted]
    return [d for d, _ in found], [m for _, m in found]


def run_backtest(config: runs.RunConfig, settings: BacktestSettings) -> dict[str, Any]:
    """``rnn-lightning backtest``: every fold (or one shard's, or merge shards), and the run folder's outputs.

    A plain function of the config: the data is read once (:func:`rnn_lightning.runs.build_data`), the run
    folder is the one the config's Trainer would write (:func:`rnn_lightning.runs.new_run_dir`), created
    only after every check, and every fold is built from the config by the run factory.

    Args:
        config: The run's config.
        settings: ``--backtest.*``.

    Returns:
        The summary (``summary.json``'s contents), with ``run_dir``.
    """
    check_settings(settings)
    plots = bool(config.get("plots.enabled", True))
    if settings.merge:
        found = read_fold_dirs([Path(p) for p in settings.merge])
        check_merge(found)
        run_dir = runs.new_run_dir(config)
        for fold_dir, _ in found:
            shutil.copytree(fold_dir, run_dir / fold_dir.name, dirs_exist_ok=True)
        merged = BacktestSettings(**found[0][1]["settings"])
        return _finish(run_dir, [d for d, _ in found], [m for _, m in found], merged, plots)
    datamodule = runs.build_data(config, "fit")
    return backtest_of(datamodule)(config, settings, datamodule)


def backtest_of(datamodule: Any) -> Callable[[runs.RunConfig, BacktestSettings, Any], dict[str, Any]]:
    """The backtest the data's kind names (its ``backtest_plan``, a key of :data:`BACKTESTS`)."""
    plan = kind_of(datamodule).backtest_plan
    if plan not in BACKTESTS:
        raise UserInputError(f"backtest has no plan {plan!r}; the plans are {', '.join(sorted(BACKTESTS))}")
    return BACKTESTS[plan]


def _walk_forward(config: runs.RunConfig, settings: BacktestSettings, datamodule: Any) -> dict[str, Any]:
    """One series' walk forward (daily prices): folds of consecutive test days, each a run of the factory."""
    plots = bool(config.get("plots.enabled", True))
    kind = kind_of(datamodule)
    if not kind.walks_forward:
        raise UserInputError(
            f"backtest walks forward through a series; {type(datamodule).__name__} holds {kind.name}, which has no "
            "time order to walk (test it with `rnn-lightning test`)"
        )
    folds = folds_for(datamodule, settings)
    mine = shard_folds(folds, parse_shard(settings.shard, settings.folds))
    signed = signature(config, datamodule, settings)
    # lightning_logs/version_N, created only after every check; or the stopped run's folder, its folds checked
    run_dir = runs.new_run_dir(config) if settings.resume is None else Path(settings.resume)
    done = {} if settings.resume is None else resumed_folds(run_dir, FOLD_FILE, signed, "price backtest")
    todo = [fold for fold in mine if fold.index not in done]
    workers = resolve_workers(settings, runs.placement(config), len(todo))
    if done:  # the folders of the folds a stopped run left unfinished start again from nothing
        clear_unfinished(run_dir, [fold.index for fold in todo])
    run_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"backtest: {len(mine)} of {len(folds)} folds of {settings.test_size} test days, {settings.window} "
        f"window, refit {settings.refit}, into {run_dir}" + (f", {workers} at a time" if workers > 1 else "")
    )
    if settings.resume is not None:
        print(resume_line(run_dir, len(mine) - len(todo), len(mine), [fold.index for fold in todo]), flush=True)
    run = BacktestRun(config, datamodule, run_dir, settings, signed)
    fold_dirs, metas = _run_workers(run, todo, workers) if workers > 1 else _run_folds(run, todo)
    if done:
        read = [done[fold.index] for fold in mine if fold.index in done]
        found = sorted([*read, *zip(fold_dirs, metas, strict=True)], key=lambda item: item[1]["fold"])
        fold_dirs, metas = [d for d, _ in found], [m for _, m in found]
    if settings.shard is not None:
        print(f"backtest: shard {settings.shard} done; join the shards with --backtest.merge '[DIR, ...]'")
        return {"folds": len(mine), "run_dir": str(run_dir)}
    return _finish(run_dir, fold_dirs, metas, settings, plots)


def _finish(
    run_dir: Path, fold_dirs: list[Path], metas: list[dict[str, Any]], settings: BacktestSettings, plots: bool
) -> dict[str, Any]:
    table = pd.concat([pd.read_csv(d / FOLD_ROWS, dtype={"date": str}) for d in fold_dirs], ignore_index=True)
    summary = write_outputs(run_dir, table, metas, settings, plots=plots)
    for line in summary_lines(summary):
        print(line)
    print(f"backtest: wrote backtest.csv, folds.csv, summary.json to {run_dir}")
    return summary | {"run_dir": str(run_dir)}


# A data kind's ``backtest_plan`` -> its backtest: one series walked forward, or a panel's rolling origins.
BACKTESTS: dict[str, Callable[[runs.RunConfig, BacktestSettings, Any], dict[str, Any]]] = {
    "walk_forward": _walk_forward,
    "rolling_origins": run_panel_backtest,
}
