"""How a search scores its trials and judges its best one: one objective per kind of data.

A data module's kind names its objective (:attr:`rnn_lightning.kinds.DataKind.tune_objective`), a key of
:data:`OBJECTIVES`; the workflow (:mod:`rnn_lightning.tune.run`) asks the objective for what differs:

* **backtest** (daily prices): a trial is a walk-forward backtest on the *tuning period* (the data without
  its last ``holdout`` days) with the ``--backtest.*`` folds, scored by its RMSE ratio to the naive forecast
  over every test day. After each fold the ratio so far is reported to Optuna, whose pruner may stop the
  trial there. The trial keeps its per-day squared errors (and the naive forecast's) in the study, so that
  every process, and every machine sharing a database, can build the verdict from the study alone: Hansen's
  SPA test and Romano-Wolf's StepM over every completed trial, the smallest ratio these days could detect,
  and the best configuration refit on everything before the held-out days and judged on them once.
* **validation** (row images): a trial is a fit scored by its best validation loss; the pruner sees each
  validation. The test split is not touched until the best trial's checkpoint is tested on it once.
* **panel_backtest** (panels, :mod:`rnn_lightning.tune.panel_objective`): a trial is the panel's
  rolling-origin backtest on every series less its last ``holdout`` horizons, scored by its MASE ratio to
  the seasonal naive forecast; SPA and StepM run on the per-date losses (mean over series per date).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings, fold_results, folds_for, leading_view, plan_folds, window_offset
from rnn_lightning.backtest.stats import diebold_mariano
from rnn_lightning.checkpointing import BestCheckpoint
from rnn_lightning.errors import UserInputError
from rnn_lightning.kinds import kind_of
from rnn_lightning.tune import outputs
from rnn_lightning.tune.objective_base import Objective
from rnn_lightning.tune.panel_objective import PanelBacktestObjective
from rnn_lightning.tune.settings import TuneSettings, holdout_days
from rnn_lightning.tune.summary import HeldOut, SearchTest, Tested, Verdict
from rnn_lightning.tune.verdict import BootstrapSettings, detectable_ratio, spa_test, stepm

if TYPE_CHECKING:
    from rnn_lightning.tune.study import Search


def tuning_data(search: Search, config: runs.RunConfig, holdout: int) -> Any:
    """A trial's data: the config's data module, read, cut before the last ``holdout`` windows (days).

    The search's data when the trial's data settings are the base config's (no second read), else the
    trial's own (:func:`rnn_lightning.runs.build_data`: no model, no Trainer).
    """
    same = config.get("data") == search.config.get("data")
    return cut(search.data if same else runs.build_data(config), holdout)


def cut(data: Any, holdout: int) -> Any:
    """Read data less its last ``holdout`` windows; a one-line error if tune cannot score it."""
    if getattr(data, "horizon", 1) != 1:
        raise UserInputError("tune scores one-day-ahead forecasts: use data.horizon 1")
    if holdout >= data.num_windows:
        raise UserInputError(f"tune.holdout {holdout} leaves no window to tune on ({data.num_windows} windows)")
    return leading_view(data, data.num_windows - holdout) if holdout else data


class BacktestObjective(Objective):
    """Daily prices: walk-forward backtests against the naive forecast, judged for the searching."""

    name = "backtest"
    score = "rmse_ratio"

    def holdout(self, settings: TuneSettings, backtest: BacktestSettings) -> int:
        return holdout_days(settings, backtest)

    def check(self, data: Any, holdout: int, backtest: BacktestSettings) -> None:
        folds_for(cut(data, holdout), backtest)  # the folds must fit in the tuning period

    def run_trial(self, search: Search, trial: Any, config: runs.RunConfig) -> float:
        import optuna

        data = tuning_data(search, config, search.holdout)
        folds = folds_for(data, search.backtest)
        dates: list[str] = []
        se: list[float] = []
        naive_se: list[float] = []
        naive_error: list[float] = []
        for fold, rows in fold_results(
            config,
            data,
            search.backtest,
            search.trial_dir(trial),
            folds,
            enable_progress_bar=False,
            enable_model_summary=False,
        ):
            actual = rows["actual"].to_numpy(np.float64)
            naive_error += list(actual - rows["naive"].to_numpy(np.float64))
            dates += list(rows["date"])
            se += list((rows["predicted"].to_numpy(np.float64) - actual) ** 2)
            naive_se += list((rows["naive"].to_numpy(np.float64) - actual) ** 2)
            ratio = math.sqrt(sum(se) / sum(naive_se)) if sum(naive_se) > 0 else math.nan
            trial.report(ratio, fold.index)
            if fold.index < len(folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"after fold {fold.index}: RMSE ratio {ratio:.4f}")
        dm = diebold_mariano(np.asarray(se), np.asarray(naive_se))
        trial.set_user_attr("dates", dates)
        trial.set_user_attr("se", se)
        trial.set_user_attr("naive_se", naive_se)
        trial.set_user_attr("naive_error", naive_error)
        trial.set_user_attr("dm_pvalue", dm["pvalue"])
        trial.set_user_attr("dm_pvalue_model_better", dm["pvalue_model_better"])
        return math.sqrt(sum(se) / sum(naive_se))

    def judge(self, search: Search, study: Any, verdict: Verdict) -> Verdict:
        best = study.best_trial
        losses = outputs.losses_table(study)
        naive = losses["naive"].to_numpy(np.float64)
        models = losses.drop(columns=["date", "naive"])
        settings = search.settings
        boot = BootstrapSettings(reps=settings.reps, block_size=settings.block_size, seed=settings.seed)
        same = [int(c.removeprefix("trial_")) for c in models.columns if (models[c].to_numpy() == naive).all()]
        spa = spa_test(naive, models, boot)
        test = SearchTest(
            tuning_days=len(losses),
            bootstrap=boot.as_dict(len(losses)),
            identical_to_naive=same,  # left out of SPA and StepM: they cannot beat what they copy
            spa_pvalue=spa["spa_pvalue"],
            spa_pvalue_lower=spa["spa_pvalue_lower"],
            spa_pvalue_upper=spa["spa_pvalue_upper"],
            stepm_superior=[int(c.removeprefix("trial_")) for c in stepm(naive, models, boot)],
            detectable_ratio=detectable_ratio(np.asarray(best.user_attrs["naive_error"], np.float64), boot),
        )
        return dataclasses.replace(verdict, search=test, holdout=self._held_out(search, best))

    def _held_out(self, search: Search, best: Any) -> HeldOut:
        """The best configuration refit on every window before the held-out days, then judged on them once."""
        if not search.holdout:
            return HeldOut()
        config = search.trial_config(best.params)
        data = tuning_data(search, config, 0)  # the whole series this time
        settings = dataclasses.replace(search.backtest, folds=1, test_size=search.holdout)
        gap = window_offset(data) - data.sequence_length
        fold = plan_folds(data.num_windows, settings, data.val_size, gap=gap, source=data.csv_path)
        with runs.quiet_lightning():
            _, rows = next(
                fold_results(
                    config,
                    data,
                    settings,
                    search.run_dir / "holdout",
                    fold,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                )
            )
        actual = rows["actual"].to_numpy(np.float64)
        held = pd.DataFrame(
            {
                "date": rows["date"],
                "actual": actual,
                "predicted": rows["predicted"],
                "naive": rows["naive"],
                "se": (rows["predicted"].to_numpy(np.float64) - actual) ** 2,
                "naive_se": (rows["naive"].to_numpy(np.float64) - actual) ** 2,
            }
        )
        se, naive_se = held["se"].to_numpy(), held["naive_se"].to_numpy()
        return HeldOut(
            days=len(held),
            rmse_ratio=math.sqrt(se.sum() / naive_se.sum()),
            dm_pvalue=diebold_mariano(se, naive_se)["pvalue"],
            start=str(held["date"].iloc[0]),
            end=str(held["date"].iloc[-1]),
            rows=held,
        )

    def write(self, search: Search, study: Any, verdict: Verdict) -> list[str]:
        run_dir = search.run_dir
        losses = outputs.losses_table(study)
        outputs.write_table(losses, run_dir / outputs.LOSSES_FILE)
        files = [outputs.LOSSES_FILE]
        held = verdict.holdout.rows if verdict.holdout is not None else None
        if held is not None:
            outputs.write_table(held, run_dir / "holdout.csv")
            files.append("holdout.csv")
        best = study.best_trial.number
        outputs.cumulative_plot(losses, held, best, verdict.as_dict(), run_dir / "best_cumulative_se.png")
        files.append("best_cumulative_se.png")
        return files


class ReportValidation(Callback):
    """Reports each validation's ``val_loss`` to the trial, and stops the fit when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        import optuna

        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics["val_loss"])
        self.trial.report(value, trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {trainer.current_epoch}: val_loss {value:.4f}")


class ValidationObjective(Objective):
    """Images: the best validation loss of a fit; the best trial's checkpoint tested once at the end."""

    name = "validation"
    score = "val_loss"

    def run_trial(self, search: Search, trial: Any, config: runs.RunConfig) -> float:
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(
            save_dir=str(search.trial_dir(trial)), name="", version="fit", default_hp_metric=False
        )
        run = runs.build(
            config, "fit", logger=logger, plots=False, enable_progress_bar=False, enable_model_summary=False
        )
        run.trainer.callbacks.append(ReportValidation(trial))
        runs.prepare_data(run)
        if not getattr(run.datamodule, "has_validation", False):
            raise UserInputError("tune on images scores the validation loss: set data.val_size > 0")
        runs.fit(run)
        best = runs.find_callback(run.trainer, BestCheckpoint)
        if best is None or best.best_model_score is None:
            raise UserInputError("tune on images needs the checkpoint callback's best val_loss (checkpoint.monitor)")
        trial.set_user_attr("checkpoint", str(Path(best.best_model_path).resolve()))
        return float(best.best_model_score)

    def judge(self, search: Search, study: Any, verdict: Verdict) -> Verdict:
        """The best trial's checkpoint, tested once on the test split (untouched by every trial)."""
        best = study.best_trial
        path = best.user_attrs.get("checkpoint")
        if not path or not Path(path).is_file():
            note = "the best trial's checkpoint is on another machine; test it there"
            return dataclasses.replace(verdict, tested=Tested(note=note))
        config = search.trial_config(best.params)
        run = runs.build(config, "test", logger=False, enable_progress_bar=False, enable_model_summary=False)
        checkpoint = runs.read_checkpoint(path)
        runs.prepare_data(run, checkpoint, source=f"checkpoint {path}")
        with runs.quiet_lightning():
            metrics = runs.test(run, path, checkpoint, verbose=False).results[0]
        tested = Tested(metrics={k: float(v) for k, v in metrics.items()}, checkpoint=path)
        return dataclasses.replace(verdict, tested=tested)


OBJECTIVES: dict[str, Objective] = {
    "backtest": BacktestObjective(),
    "validation": ValidationObjective(),
    "panel_backtest": PanelBacktestObjective(),
}


def objective_of(datamodule: Any) -> Objective:
    """The objective of a data module's kind (its ``tune_objective``)."""
    name = kind_of(datamodule).tune_objective
    if name not in OBJECTIVES:
        raise UserInputError(f"tune has no objective {name!r}; the objectives are {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]
