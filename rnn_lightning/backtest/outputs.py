"""The files of a backtest run folder: each fold's folder, and the run's tables, summary, scalars and plot.

``fold_KK/predictions.csv`` and ``fold_KK/fold.json`` per fold; ``backtest.csv``, ``folds.csv``,
``summary.json``, TensorBoard scalars and ``backtest_cumulative_se.png`` for the run. ``--backtest.merge``
rebuilds the run's files from the fold folders of several shard runs; ``--backtest.resume`` reads the
finished folds of a stopped run back (:func:`resumed_folds`) and trains the rest into its folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rnn_lightning.backtest.stats import summarise
from rnn_lightning.checkpointing import write_atomically
from rnn_lightning.errors import UserInputError

if TYPE_CHECKING:
    from rnn_lightning.backtest.plan import BacktestSettings

FOLD_FILE = "fold.json"  # per fold folder: the fold's bounds, dates, metrics and the run's signature
FOLD_ROWS = "predictions.csv"  # per fold folder: the fold's test days


def fold_dir_name(index: int) -> str:
    """The fold's folder inside the run folder, e.g. ``fold_03``."""
    return f"fold_{index:02d}"


def write_fold_file(path: Path, text: str) -> None:
    """A fold file written atomically (a hidden temporary file renamed into place): a kill leaves none or all.

    A fold writes its rows first and its JSON file last, so a fold folder holding both is a finished fold.
    """
    write_atomically(path, lambda handle: handle.write(text.encode()))


def resumed_folds(run_dir: Path, fold_file: str, signature: str, what: str) -> dict[int, tuple[Path, dict[str, Any]]]:
    """The finished folds of the run folder ``--backtest.resume`` continues, by index, with their fold files.

    A fold is finished when its folder holds ``predictions.csv`` and ``fold_file`` (``fold.json`` or
    ``panel_fold.json``, written last). Every fold file must carry this run's ``signature`` (config, data and
    settings), else the folder is refused in one line; so is a path that is no folder or holds no finished
    fold of ``what`` (``price backtest``, ``panel backtest``).
    """
    if not run_dir.is_dir():
        raise UserInputError(f"backtest.resume: {run_dir} is not a folder")
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(run_dir.glob(f"fold_*/{fold_file}")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):  # not this project's (fold files are written atomically): not finished
            continue
        name = path.relative_to(run_dir)
        if not isinstance(meta, dict) or "signature" not in meta:
            raise UserInputError(
                f"backtest.resume: {run_dir / name} has no signature (an older rnn-lightning's); start the backtest "
                "again without --backtest.resume"
            )
        if meta["signature"] != signature:
            raise UserInputError(
                f"backtest.resume: {run_dir} was made by another config, data or backtest settings ({name} is signed "
                f"{meta['signature']}, this command {signature}); resume it with the options that started it"
            )
        index = meta.get("fold")
        if isinstance(index, int) and path.parent.name == fold_dir_name(index) and (path.parent / FOLD_ROWS).is_file():
            found[index] = (path.parent, meta)
    if not found:
        raise UserInputError(
            f"backtest.resume: {run_dir} holds no finished {what} fold (fold_*/{FOLD_ROWS} and {fold_file}); "
            "start the backtest without --backtest.resume"
        )
    return found


def clear_unfinished(run_dir: Path, indices: Iterable[int]) -> None:
    """Remove the folders the folds ``indices`` left unfinished (a stopped fit's logs and checkpoints)."""
    for index in indices:
        fold_dir = run_dir / fold_dir_name(index)
        if fold_dir.is_dir():
            shutil.rmtree(fold_dir)


def resume_line(run_dir: Path, done: int, total: int, todo: list[int]) -> str:
    """What ``--backtest.resume`` found: the folds read back and the folds left to train."""
    which = f" (fold {', '.join(map(str, todo))})" if todo else ""
    return f"backtest: resuming {run_dir}: {done} of {total} folds read back, {len(todo)} left to train{which}"


def read_fold_dirs(run_dirs: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every fold folder under ``run_dirs`` with its ``fold.json``, by fold index."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise UserInputError(f"backtest.merge: {run_dir} is not a folder")
        fold_dirs = sorted(p.parent for p in run_dir.glob(f"fold_*/{FOLD_FILE}"))
        if not fold_dirs:
            raise UserInputError(f"backtest.merge: {run_dir} holds no backtest fold (fold_*/{FOLD_FILE})")
        for fold_dir in fold_dirs:
            if not (fold_dir / FOLD_ROWS).is_file():
                raise UserInputError(f"backtest.merge: {fold_dir} has no {FOLD_ROWS}; did that fold finish?")
            found.append((fold_dir, json.loads((fold_dir / FOLD_FILE).read_text())))
    return sorted(found, key=lambda item: item[1]["fold"])


def check_merge(found: list[tuple[Path, dict[str, Any]]]) -> None:
    """The shards must be of one config and data, and hold every fold exactly once."""
    signatures = {meta["signature"] for _, meta in found}
    if len(signatures) > 1:
        names = ", ".join(sorted({str(d.parent) for d, meta in found if meta["signature"] != found[0][1]["signature"]}))
        raise UserInputError(
            f"backtest.merge: the folders come from different configs or data ({names} differs "
            f"from {found[0][0].parent})"
        )
    indices = [meta["fold"] for _, meta in found]
    duplicated = sorted({k for k in indices if indices.count(k) > 1})
    if duplicated:
        raise UserInputError(f"backtest.merge: fold(s) {duplicated} appear in more than one folder")
    folds = found[0][1]["settings"]["folds"]
    missing = sorted(set(range(folds)) - set(indices))
    if missing:
        raise UserInputError(f"backtest.merge: fold(s) {missing} of {folds} are missing; run their shards first")


def cumulative_plot(table: pd.DataFrame, summary: dict[str, Any]) -> Any:
    """The cumulative sum of ``naive SE - model SE`` over the test days, folds marked: up means the model wins."""
    from matplotlib.figure import Figure

    dates = pd.to_datetime(table["date"]).to_numpy()
    gain = ((table["naive"] - table["actual"]) ** 2 - (table["predicted"] - table["actual"]) ** 2).cumsum()
    fig = Figure(figsize=(12, 5))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.1)
    ax = fig.subplots()
    ax.plot(dates, gain.to_numpy(), color="tab:blue", lw=1.2)
    ax.axhline(0.0, color="black", lw=0.8)
    for k, rows in table.groupby("fold", sort=True):
        first = pd.Timestamp(rows["date"].iloc[0])
        ax.axvline(first, color="tab:gray", lw=0.8, ls="--")
        ax.text(first, 1.0, f" fold {k}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="tab:gray")
    ax.set_ylabel("cumulative naive SE - model SE (points^2)")
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{summary['folds']} folds, {summary['days']} test days: RMSE ratio {summary['rmse_ratio']:.4f}, "
        f"DM p = {summary['dm_pvalue']:.3g} (above 0: the model has beaten the naive forecast so far)",
        fontsize=10,
    )
    return fig


def write_outputs(
    run_dir: Path, table: pd.DataFrame, metas: list[dict[str, Any]], settings: BacktestSettings, plots: bool = True
) -> dict[str, Any]:
    """``backtest.csv``, ``folds.csv``, ``summary.json``, TensorBoard scalars and the plot; returns the summary."""
    table = table.sort_values(["fold", "date"], kind="stable").reset_index(drop=True)
    per_fold, summary = summarise(table, settings)
    dates = pd.DataFrame([{"fold": m["fold"], **m["dates"]} for m in metas])
    per_fold = dates.merge(per_fold, on="fold").sort_values("fold")
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "backtest.csv", index=False, float_format="%.6f")
    per_fold.to_csv(run_dir / "folds.csv", index=False, float_format="%.6f")
    summary["settings"] = metas[0]["settings"]
    summary["signature"] = metas[0]["signature"]
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    image = None
    if plots:
        from rnn_lightning.callbacks import encode_png, render

        image = render(cumulative_plot(table, summary))
        (run_dir / "backtest_cumulative_se.png").write_bytes(encode_png(image))
    _write_scalars(run_dir, summary, per_fold, image)
    return summary


def _write_scalars(run_dir: Path, summary: dict[str, Any], per_fold: pd.DataFrame, image: np.ndarray | None) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    try:
        for name in ("rmse", "naive_rmse", "rmse_ratio", "direction_acc", "dm_pvalue", "up_share"):
            writer.add_scalar(f"backtest_{name}", summary[name], 0)
        for row in per_fold.itertuples():
            for name in ("rmse", "naive_rmse", "rmse_ratio", "direction_acc", "up_share"):
                writer.add_scalar(f"backtest_fold_{name}", getattr(row, name), int(row.fold))
        if image is not None:
            writer.add_image("plots/backtest_cumulative_se", image, 0, dataformats="HWC")
    finally:
        writer.close()


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The few lines printed at the end of a run."""
    lines = [
        f"backtest: {summary['folds']} folds, {summary['days']} test days; RMSE model {summary['rmse']:,.3f}, "
        f"naive {summary['naive_rmse']:,.3f}, ratio {summary['rmse_ratio']:.4f}"
        + (
            f" ({summary['ci_level']:.0%} block-bootstrap CI {summary['rmse_ratio_ci_low']:.4f}"
            f"..{summary['rmse_ratio_ci_high']:.4f})"
            if "rmse_ratio_ci_low" in summary
            else ""
        ),
        f"backtest: fold ratios {summary['fold_rmse_ratio_mean']:.4f} +- {summary['fold_rmse_ratio_std']:.4f} "
        f"(min {summary['fold_rmse_ratio_min']:.4f}, max {summary['fold_rmse_ratio_max']:.4f}); "
        f"{summary['folds_better_than_naive']} of {summary['folds']} folds beat the naive forecast",
        f"backtest: Diebold-Mariano (HLN) {summary['dm_statistic']:.3f}, p = {summary['dm_pvalue']:.4f} "
        f"(one-sided, model better: {summary['dm_pvalue_model_better']:.4f}); direction {summary['direction_acc']:.3f} "
        f"vs up share {summary['up_share']:.3f}, binomial p = {summary['direction_pvalue']:.4f}",
    ]
    return lines
