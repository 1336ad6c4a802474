"""The files of a tune run folder, all built from the study, so that every machine of a search can write them.

``trials.csv`` (a row per trial), ``losses.csv`` (a row per tuning day: the naive forecast's and every
completed trial's squared error), ``summary.json``, ``best_config.yaml`` (what ``fit``, ``backtest`` and
``predict`` accept as it is), Optuna's optimisation-history and parameter-importance plots, the best
trial's cumulative squared-error difference, and TensorBoard's HParams dashboard (a run per trial).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TRIALS_FILE = "trials.csv"
LOSSES_FILE = "losses.csv"
SUMMARY_FILE = "summary.json"
BEST_CONFIG_FILE = "best_config.yaml"


def counted_trials(study: Any) -> list[Any]:
    """Every trial but the surplus ones (which yielded their slot without running), by number."""
    return sorted(
        (t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")), key=lambda t: t.number
    )


def trials_table(study: Any, keys: list[str]) -> pd.DataFrame:
    """``trials.csv``: number, state, every parameter, the score, its DM p-value on its own, seconds."""
    rows = []
    for trial in counted_trials(study):
        if trial.state.name in ("RUNNING", "WAITING"):
            continue
        row: dict[str, Any] = {
            "number": trial.number,
            "state": {"FAIL": "failed"}.get(trial.state.name, trial.state.name.lower()),
        }
        row.update({key: trial.params.get(key) for key in keys})
        row["score"] = trial.value
        row["dm_pvalue"] = trial.user_attrs.get("dm_pvalue")
        row["seconds"] = trial.user_attrs.get("seconds")
        rows.append(row)
    return pd.DataFrame(rows, columns=["number", "state", *keys, "score", "dm_pvalue", "seconds"])


def completed_with_losses(study: Any) -> list[Any]:
    """Completed trials that carry their per-day losses (price searches)."""
    return [t for t in counted_trials(study) if t.state.name == "COMPLETE" and "se" in t.user_attrs]


def losses_table(study: Any) -> pd.DataFrame:
    """``losses.csv``: date, naive, then ``trial_N`` per completed trial: each day's squared error in price units.

    Every trial's test days are the same days (the folds tile the end of the tuning period); a trial whose
    days differ (a study whose data changed cannot happen: the signature refuses it) is an error.
    """
    trials = completed_with_losses(study)
    if not trials:
        return pd.DataFrame(columns=["date", "naive"])
    dates = trials[0].user_attrs["dates"]
    table: dict[str, Any] = {"date": dates, "naive": trials[0].user_attrs["naive_se"]}
    for trial in trials:
        if trial.user_attrs["dates"] != dates:
            raise RuntimeError(f"trial {trial.number} was scored on other days than trial {trials[0].number}")
        table[f"trial_{trial.number}"] = trial.user_attrs["se"]
    return pd.DataFrame(table)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """A table as CSV, numbers with 10 significant digits (enough to recompute every statistic)."""
    frame.to_csv(path, index=False, float_format="%.10g")


def write_summary(summary: dict[str, Any], path: Path) -> None:
    """``summary.json``: NaN and infinities as null, numpy numbers as plain ones."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, (np.floating, np.integer)):
            return clean(value.item())
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(summary), indent=2) + "\n")


def optuna_plots(study: Any, run_dir: Path) -> list[str]:
    """Optuna's optimisation history and parameter importances as PNG files; the names written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from optuna.visualization import matplotlib as plots

    written = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, draw, enough in (
            ("optimization_history.png", plots.plot_optimization_history, len(complete) >= 1),
            ("param_importances.png", plots.plot_param_importances, len(complete) >= 2 and bool(study.best_params)),
        ):
            if not enough:
                continue
            try:
                axes = draw(study)
            except (ValueError, RuntimeError):  # e.g. every completed trial drew the same values
                continue
            figure: Any = getattr(axes, "figure", None) or axes[0].figure  # type: ignore[index]
            figure.savefig(run_dir / name, dpi=100, bbox_inches="tight")
            written.append(name)
            import matplotlib.pyplot as plt

            plt.close(figure)
    return written


def cumulative_plot(
    tuning: pd.DataFrame, holdout: pd.DataFrame | None, trial: int, summary: dict[str, Any], path: Path
) -> None:
    """The best trial's cumulative ``naive SE - model SE`` over the tuning days, then the held-out days."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5))
    ax = fig.subplots()
    gain = (tuning["naive"] - tuning[f"trial_{trial}"]).cumsum()
    ax.plot(pd.to_datetime(tuning["date"]), gain.to_numpy(), color="tab:blue", lw=1.2, label=f"trial {trial}, tuning")
    if holdout is not None and len(holdout):
        start = float(gain.iloc[-1]) if len(gain) else 0.0
        held = start + (holdout["naive_se"] - holdout["se"]).cumsum()
        ax.plot(pd.to_datetime(holdout["date"]), held.to_numpy(), color="tab:orange", lw=1.2, label="held out")
        ax.axvline(pd.Timestamp(holdout["date"].iloc[0]), color="tab:gray", ls="--", lw=0.8)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylabel("cumulative naive SE - model SE (points^2)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    spa = summary.get("spa_pvalue")
    ax.set_title(
        f"best of {summary.get('completed')} trials: RMSE ratio {summary.get('best_score', math.nan):.4f}; "
        f"SPA p = {spa if spa is None else format(spa, '.3f')} (above 0: the model has beaten the naive forecast)",
        fontsize=10,
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")


def hparams(study: Any, keys: list[str], run_dir: Path) -> None:
    """Each finished trial's parameters and score in TensorBoard's HParams dashboard (a run per trial)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "hparams"))
    try:
        for trial in counted_trials(study):
            if trial.state.name not in ("COMPLETE", "PRUNED"):
                continue
            params = {key.replace(".", "/"): _scalar(trial.params.get(key)) for key in keys}
            params["state"] = trial.state.name.lower()
            metrics = {"tune/score": trial.value if trial.value is not None else math.nan}
            writer.add_hparams(params, metrics, run_name=f"trial_{trial.number:04d}")
    finally:
        writer.close()


def _scalar(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) else str(value)
