"""How a search on a panel scores its trials and judges its best one: the panel's rolling-origin backtest.

* **Tuning period**: every series less its last ``tune.holdout`` horizons (default 1: the protocol's
  last horizon of each series; on Tourism this lies in the training part, so the competition's test part
  is never seen unless ``--backtest.shipped_test`` asks).
* **A trial** is :func:`rnn_lightning.backtest.panel_run.panel_fold_results` over the ``--backtest.folds``
  rolling origins of that period, scored by its MASE ratio to the seasonal naive forecast over every
  test point; after each fold the ratio so far goes to Optuna's pruner. The trial keeps one loss per
  forecast date (the mean over series of the scaled absolute errors, :func:`date_losses`) and the
  seasonal naive's in the study, so the verdict needs nothing but the study.
* **The verdict**: Hansen's SPA and Romano-Wolf's StepM (:mod:`rnn_lightning.tune.verdict`) on those
  per-date losses against the seasonal naive's: one loss per date, so that series forecast on the same
  date (correlated) are not counted as independent evidence. Then the best configuration is refit and
  forecasts each held-out horizon once (one rolling origin per held-out horizon), judged by its MASE ratio
  and the Diebold-Mariano test on those per-date losses.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings
from rnn_lightning.backtest.panel_plan import plan_panel_folds
from rnn_lightning.backtest.panel_run import panel_fold_results, real_calendar
from rnn_lightning.backtest.panel_stats import date_losses, dm_lags, pooled_metrics
from rnn_lightning.backtest.stats import diebold_mariano
from rnn_lightning.errors import UserInputError
from rnn_lightning.tune import outputs
from rnn_lightning.tune.objective_base import Objective
from rnn_lightning.tune.settings import TuneSettings
from rnn_lightning.tune.summary import HeldOut, SearchTest, Verdict
from rnn_lightning.tune.verdict import MIN_DAYS, BootstrapSettings, spa_test, stepm

if TYPE_CHECKING:
    from rnn_lightning.tune.study import Search

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def trial_data(search: Search, config: runs.RunConfig) -> Any:
    """The search's read panel when the trial's data settings are the base config's, else the trial's own."""
    return search.data if config.get("data") == search.config.get("data") else runs.build_data(config)


def backtest_rows(search: Search, config: runs.RunConfig, folds: Any, where: str) -> pd.DataFrame:
    """Every test point of ``folds``, fitted from ``config`` one fold after another."""
    with runs.quiet_lightning():
        parts = [rows for _, rows in panel_fold_results(config, folds, search.run_dir / where, **QUIET)]
    return pd.concat(parts, ignore_index=True)


class PanelBacktestObjective(Objective):
    """Panels: rolling-origin backtests against the seasonal naive forecast, judged on per-date losses."""

    name = "panel_backtest"
    score = "mase_ratio"

    def holdout(self, settings: TuneSettings, backtest: BacktestSettings) -> int:
        """Held-out horizons at the end of every series: ``tune.holdout``, default 1."""
        return 1 if settings.holdout is None else settings.holdout

    def check(self, data: Any, holdout: int, backtest: BacktestSettings) -> None:
        plan_panel_folds(data, backtest, holdout)  # the trials' folds fit in the tuning period
        if backtest.folds * data.horizon < MIN_DAYS:
            raise UserInputError(
                f"backtest.folds {backtest.folds} x horizon {data.horizon} = {backtest.folds * data.horizon} "
                f"forecast dates are too few for the SPA test over the trials; it needs {MIN_DAYS}"
            )
        if holdout:
            plan_panel_folds(data, dataclasses.replace(backtest, folds=holdout))  # the hold-out refit's

    def run_trial(self, search: Search, trial: Any, config: runs.RunConfig) -> float:
        import optuna

        data = trial_data(search, config)
        folds = plan_panel_folds(data, search.backtest, search.holdout)
        parts: list[pd.DataFrame] = []
        ratio = float("nan")
        for fold, rows in panel_fold_results(config, folds, search.trial_dir(trial), **QUIET):
            parts.append(rows)
            ratio = pooled_metrics(pd.concat(parts, ignore_index=True))["mase_ratio"]
            trial.report(ratio, fold.index)
            if fold.index < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"after fold {fold.index}: MASE ratio {ratio:.4f}")
        table = pd.concat(parts, ignore_index=True)
        losses = date_losses(table, real_calendar(data))
        model, snaive = losses["model"].to_numpy(np.float64), losses["snaive"].to_numpy(np.float64)
        # One origin's H dates are one forecast: no test of it (the HLN factor is 0 at n = H).
        dm = (
            diebold_mariano(model, snaive, horizon=dm_lags(snaive - model, data.horizon) + 1)
            if len(losses) > data.horizon
            else None
        )
        metrics = pooled_metrics(table)
        trial.set_user_attr("dates", [str(d) for d in losses["date"]])
        trial.set_user_attr("losses", [float(v) for v in model])
        trial.set_user_attr("snaive_losses", [float(v) for v in snaive])
        trial.set_user_attr("mase", metrics["mase"])
        trial.set_user_attr("snaive_mase", metrics["snaive_mase"])
        if dm is not None:
            trial.set_user_attr("dm_pvalue", dm["pvalue"])
            trial.set_user_attr("dm_pvalue_model_better", dm["pvalue_model_better"])
        return ratio

    def judge(self, search: Search, study: Any, verdict: Verdict) -> Verdict:
        losses = losses_table(study)
        snaive = losses["snaive"].to_numpy(np.float64)
        models = losses.drop(columns=["date", "snaive"])
        settings = search.settings
        boot = BootstrapSettings(reps=settings.reps, block_size=settings.block_size, seed=settings.seed)
        same = [int(c.removeprefix("trial_")) for c in models.columns if (models[c].to_numpy() == snaive).all()]
        spa = spa_test(snaive, models, boot)
        test = SearchTest(
            tuning_days=len(losses),
            bootstrap=boot.as_dict(len(losses)),
            identical_to_naive=same,
            spa_pvalue=spa["spa_pvalue"],
            spa_pvalue_lower=spa["spa_pvalue_lower"],
            spa_pvalue_upper=spa["spa_pvalue_upper"],
            stepm_superior=[int(c.removeprefix("trial_")) for c in stepm(snaive, models, boot)],
            detectable_ratio=None,  # the price simulation of an RMSE ratio; no MASE counterpart yet
        )
        return dataclasses.replace(verdict, search=test, holdout=self._held_out(search, study.best_trial))

    def _held_out(self, search: Search, best: Any) -> HeldOut:
        """The best configuration refit at each held-out origin (every step before it) and forecast once."""
        if not search.holdout:
            return HeldOut()
        config = search.trial_config(best.params)
        data = trial_data(search, config)
        folds = plan_panel_folds(data, dataclasses.replace(search.backtest, folds=search.holdout))
        table = backtest_rows(search, config, folds, "holdout")
        losses = date_losses(table, real_calendar(data))
        model, snaive = losses["model"].to_numpy(np.float64), losses["snaive"].to_numpy(np.float64)
        dm = (
            diebold_mariano(model, snaive, horizon=dm_lags(snaive - model, data.horizon) + 1)
            if len(losses) > data.horizon
            else None
        )
        return HeldOut(
            days=len(losses),
            mase_ratio=pooled_metrics(table)["mase_ratio"],
            dm_pvalue=dm["pvalue"] if dm is not None else None,
            start=str(table["ds"].min()),
            end=str(table["ds"].max()),
            rows=table,
        )

    def write(self, search: Search, study: Any, verdict: Verdict) -> list[str]:
        losses = losses_table(study)
        outputs.write_table(losses, search.run_dir / outputs.LOSSES_FILE)
        files = [outputs.LOSSES_FILE]
        held = verdict.holdout.rows if verdict.holdout is not None else None
        if held is not None:
            outputs.write_table(held, search.run_dir / "holdout.csv")
            files.append("holdout.csv")
        return files


def losses_table(study: Any) -> pd.DataFrame:
    """``losses.csv``: date, snaive, then ``trial_N`` per completed trial: each forecast date's mean scaled loss."""
    trials = [t for t in outputs.counted_trials(study) if t.state.name == "COMPLETE" and "losses" in t.user_attrs]
    if not trials:
        return pd.DataFrame(columns=["date", "snaive"])
    dates = trials[0].user_attrs["dates"]
    table: dict[str, Any] = {"date": dates, "snaive": trials[0].user_attrs["snaive_losses"]}
    for trial in trials:
        if trial.user_attrs["dates"] != dates:
            raise RuntimeError(f"trial {trial.number} was scored on other dates than trial {trials[0].number}")
        table[f"trial_{trial.number}"] = trial.user_attrs["losses"]
    return pd.DataFrame(table)
