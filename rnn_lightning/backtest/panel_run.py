"""A panel's backtest: rolling origins over the last k horizons of every series, each fold a run of the factory.

``rnn-lightning backtest --config configs/tourism_monthly.yaml --backtest.folds K`` comes here when the
data's kind names this plan (``backtest_plan = "rolling_origins"``, :data:`rnn_lightning.backtest.run.BACKTESTS`):

1. :func:`~rnn_lightning.backtest.panel_plan.plan_panel_folds` cuts the folds' views and checks them, or
   says in one line why the series cannot hold them, before any run folder exists.
2. Each fold is a fresh model and Trainer from the run factory, built from the config as ``fit`` builds
   them, seeded with ``seed_everything + fold``, on the fold's view; its best checkpoint forecasts the
   fold's test block of every series (``fold_KK/predictions.csv``).
3. The run folder gets ``backtest.csv`` (every test point), ``folds.csv``, ``series.csv``,
   ``date_losses.csv`` (one loss per forecast date) and ``summary.json``
   (:mod:`rnn_lightning.backtest.panel_stats`), and TensorBoard scalars.

``--backtest.resume DIR`` continues a stopped run in its folder: the folds whose ``predictions.csv`` and
``panel_fold.json`` (written atomically, the JSON last) are there and signed by this run's config, data
and settings (:func:`panel_signature`) are read back; the others are trained, each seeded by its index as
in one run, so the outputs equal an uninterrupted run's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rnn_lightning import runs
from rnn_lightning.backtest.outputs import (
    FOLD_ROWS,
    clear_unfinished,
    fold_dir_name,
    resume_line,
    resumed_folds,
    write_fold_file,
)
from rnn_lightning.backtest.panel_plan import PanelFold, plan_panel_folds
from rnn_lightning.backtest.panel_stats import date_losses, fold_metrics, panel_summary, pooled_metrics, series_metrics
from rnn_lightning.backtest.plan import BacktestSettings
from rnn_lightning.backtest.signing import UNSIGNED_KEYS, config_signature

PANEL_FOLD_FILE = "panel_fold.json"  # per fold folder: its cut, test dates and metrics (not a price fold.json)
COLUMNS = ("unique_id", "ds", "fold", "h", "actual", "predicted", "snaive", "naive", "mase_scale")
# Config keys left out of a panel backtest's signature: the price backtest's, and where and how the panel is
# read (its values, ids and dates are signed themselves).
SOURCE_KEYS = ("data.init_args.source", "data.init_args.cache", "data.init_args.cache_dir")
# pandas 2 parses a float exactly back only with "round_trip"; pandas 3 always does, and deprecates the argument.
EXACT_FLOATS: dict[str, Any] = {"float_precision": "round_trip"} if pd.__version__.split(".")[0] == "2" else {}
# Settings left out of ``summary.json``: how the folds were spread over processes, and the resumed folder.
UNLISTED_SETTINGS = ("shard", "merge", "workers", "resume")


def real_calendar(data: Any) -> bool:
    """True when the panel's dates are real (the per-date losses group by ``ds``), False for placeholders."""
    return not bool(data.panel.nominal_starts)


def _dates(stamps: np.ndarray) -> np.ndarray:
    index = pd.DatetimeIndex(stamps)
    fmt = "%Y-%m-%d" if bool((index == index.normalize()).all()) else "%Y-%m-%d %H:%M:%S"
    return np.asarray(index.strftime(fmt), dtype=object)


def fold_rows(model: Any, view: Any, fold: PanelFold) -> pd.DataFrame:
    """Every series' test block of the fold, forecast by ``model``: one row per point (:data:`COLUMNS`)."""
    from rnn_lightning.reports.common import predict_all

    batch = view.split_batch("test")  # one window per series: its last H steps
    out = predict_all(model, batch)
    index = view.splits.test
    H = index.horizon
    steps = index.origin[:, None] + np.arange(H)  # (W, H) positions in the view's layout
    return pd.DataFrame(
        {
            "unique_id": np.asarray(view.splits.layout.ids, dtype=object)[np.repeat(index.series, H)],
            "ds": _dates(view.splits.layout.timestamps[steps.reshape(-1)]),
            "fold": fold.index,
            "h": np.tile(np.arange(1, H + 1), len(index)),
            "actual": batch.y.double().numpy().reshape(-1),
            "predicted": out["prediction"].double().numpy().reshape(-1),
            "snaive": batch.snaive.double().numpy().reshape(-1),
            "naive": batch.ref.double()[:, None].expand(-1, H).numpy().reshape(-1),
            "mase_scale": batch.mase_scale.double()[:, None].expand(-1, H).numpy().reshape(-1),
        }
    )


def panel_signature(config: runs.RunConfig, settings: BacktestSettings, data: Any) -> str:
    """A panel backtest's signature: the config, the fold count, horizon and ``shipped_test``, and the panel.

    The config less :data:`~rnn_lightning.backtest.signing.UNSIGNED_KEYS` and :data:`SOURCE_KEYS`; of the
    settings only those a panel's folds read (the others are the price backtest's); the panel's values,
    offsets, covariates, shipped test part, dates and ids: the read arrays' bytes, not the file (moved or
    re-cached data signs the same).
    """
    panel = data.panel
    arrays = (panel.values, panel.offsets, panel.past, panel.static, panel.test_values, panel.test_offsets)
    dates = (panel.starts, panel.timestamps)
    chunks = [np.ascontiguousarray(a).tobytes() for a in (*arrays, *dates) if a is not None]
    chunks.append("\n".join(map(str, panel.ids)).encode() + f"\n{panel.freq}".encode())
    folds = BacktestSettings(folds=settings.folds, shipped_test=bool(settings.shipped_test))
    return config_signature(config, folds, chunks, unsigned=(*UNSIGNED_KEYS, *SOURCE_KEYS), horizon=data.horizon)


def read_fold_rows(path: Path) -> pd.DataFrame:
    """A fold's ``predictions.csv`` as :func:`fold_rows` made it: ids and dates as text, every float exact."""
    numbers = [name for name in COLUMNS if name not in ("unique_id", "ds")]
    return pd.read_csv(
        path,
        dtype={"unique_id": str, "ds": str},
        keep_default_na=False,  # an id such as "NA" stays text
        na_values={name: [""] for name in numbers},
        **EXACT_FLOATS,
    )


def fit_fold(config: runs.RunConfig, fold: PanelFold, run_dir: Path, **trainer_overrides: Any) -> pd.DataFrame:
    """Fit one fold with a fresh run from the factory on its view; its best model's test rows."""
    from lightning.pytorch.loggers import TensorBoardLogger

    fold_dir = run_dir / fold_dir_name(fold.index)
    kwargs: dict[str, Any] = dict(trainer_overrides)
    if config.get("trainer.logger") is False:
        kwargs.update(logger=False, default_root_dir=str(fold_dir))
    else:
        kwargs["logger"] = TensorBoardLogger(
            save_dir=str(run_dir), name="", version=fold_dir.name, default_hp_metric=False
        )
    run = runs.build(
        config, "fit", datamodule=fold.data, seed_offset=fold.index, plots=False, save_config=False, **kwargs
    )
    runs.fit(run)
    best = run.best_checkpoint
    if best:
        run.model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    return fold_rows(run.model, fold.data, fold)


def panel_fold_results(
    config: runs.RunConfig, folds: list[PanelFold], run_dir: Path, **trainer_overrides: Any
) -> Iterator[tuple[PanelFold, pd.DataFrame]]:
    """Fit the folds one after another and yield each one's test rows as it finishes (a search stops early)."""
    for fold in folds:
        yield fold, fit_fold(config, fold, run_dir, **trainer_overrides)


def run_panel_backtest(config: runs.RunConfig, settings: BacktestSettings, data: Any) -> dict[str, Any]:
    """``rnn-lightning backtest`` on a panel: every fold, then the run folder's files; returns the summary.

    With ``settings.resume`` the run continues in that folder: its finished folds are read back (checked
    against this run's signature before anything is written), the others trained into it.
    """
    folds = plan_panel_folds(data, settings)  # every check, before the run folder exists
    signature = panel_signature(config, settings, data)
    run_dir = runs.new_run_dir(config) if settings.resume is None else Path(settings.resume)
    done = {} if settings.resume is None else resumed_folds(run_dir, PANEL_FOLD_FILE, signature, "panel backtest")
    todo = [fold for fold in folds if fold.index not in done]
    if done:  # the folders of the folds a stopped run left unfinished start again from nothing
        clear_unfinished(run_dir, [fold.index for fold in todo])
    run_dir.mkdir(parents=True, exist_ok=True)
    H = data.horizon
    print(
        f"backtest: {len(folds)} rolling origins of {H} steps over {data.n_series} series (the last "
        f"{len(folds) * H} steps of each{', shipped test part included' if settings.shipped_test else ''}), "
        f"into {run_dir}",
        flush=True,
    )
    if settings.resume is not None:
        print(resume_line(run_dir, len(done), len(folds), [fold.index for fold in todo]), flush=True)
    parts = {index: read_fold_rows(fold_dir / FOLD_ROWS) for index, (fold_dir, _) in done.items()}
    with runs.quiet_lightning():
        for fold, rows in panel_fold_results(config, todo, run_dir):
            fold_dir = run_dir / fold_dir_name(fold.index)
            fold_dir.mkdir(parents=True, exist_ok=True)
            write_fold_file(fold_dir / FOLD_ROWS, rows.to_csv(index=False))
            metrics = pooled_metrics(rows)
            meta = {"fold": fold.index, "cut": fold.cut, "test_start": rows["ds"].min(), "test_end": rows["ds"].max()}
            # Written last: a fold folder with this file is a finished fold (--backtest.resume reads it back).
            write_fold_file(
                fold_dir / PANEL_FOLD_FILE, json.dumps(meta | metrics | {"signature": signature}, indent=2) + "\n"
            )
            print(
                f"backtest: fold {fold.index} ({meta['test_start']}..{meta['test_end']}): MASE {metrics['mase']:.4f}, "
                f"seasonal naive {metrics['snaive_mase']:.4f}, ratio {metrics['mase_ratio']:.4f}",
                flush=True,
            )
            parts[fold.index] = rows
    table = pd.concat([parts[index] for index in sorted(parts)], ignore_index=True)
    summary = write_panel_outputs(run_dir, table, H, real_calendar(data), settings)
    print(
        f"backtest: {summary['folds']} folds, {summary['series']} series, {summary['points']} test points; "
        f"MASE {summary['mase']:.4f}, seasonal naive {summary['snaive_mase']:.4f}, ratio {summary['mase_ratio']:.4f}; "
        f"sMAPE {summary['smape']:.3f} (seasonal naive {summary['snaive_smape']:.3f})"
    )
    if "dm_statistic" in summary:
        print(
            f"backtest: on {summary['dates']} per-date losses (mean over series), Diebold-Mariano (HLN) vs seasonal "
            f"naive {summary['dm_statistic']:.3f}, p = {summary['dm_pvalue']:.4f} (one-sided, model better: "
            f"{summary['dm_pvalue_model_better']:.4f})"
        )
    print(f"backtest: wrote backtest.csv, folds.csv, series.csv, date_losses.csv, summary.json to {run_dir}")
    return summary | {"run_dir": str(run_dir)}


def write_panel_outputs(
    run_dir: Path, table: pd.DataFrame, horizon: int, calendar: bool, settings: BacktestSettings
) -> dict[str, Any]:
    """``backtest.csv``, ``folds.csv``, ``series.csv``, ``date_losses.csv``, ``summary.json`` and scalars."""
    table = table.loc[:, list(COLUMNS)].sort_values(["fold", "unique_id", "h"], kind="stable").reset_index(drop=True)
    table.to_csv(run_dir / "backtest.csv", index=False, float_format="%.10g")
    per_fold = fold_metrics(table)
    per_fold.to_csv(run_dir / "folds.csv", index=False, float_format="%.6f")
    series_metrics(table).to_csv(run_dir / "series.csv", index=False, float_format="%.6f")
    date_losses(table, calendar).to_csv(run_dir / "date_losses.csv", index=False, float_format="%.10g")
    summary = panel_summary(table, horizon, calendar)
    summary["horizon"] = horizon
    summary["settings"] = {k: v for k, v in asdict(settings).items() if k not in UNLISTED_SETTINGS}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    _write_scalars(run_dir, summary, per_fold)
    return summary


def _write_scalars(run_dir: Path, summary: dict[str, Any], per_fold: pd.DataFrame) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    try:
        for name in ("mase", "snaive_mase", "mase_ratio", "smape", "snaive_smape", "rmse", "dm_pvalue"):
            if name in summary:
                writer.add_scalar(f"backtest_{name}", summary[name], 0)
        for row in per_fold.itertuples():
            for name in ("mase", "snaive_mase", "mase_ratio", "smape"):
                writer.add_scalar(f"backtest_fold_{name}", getattr(row, name), int(row.fold))
    finally:
        writer.close()
