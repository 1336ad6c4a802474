"""The verdict of a search as one typed object: its numbers (``summary.json``) and the paragraph it prints.

A :class:`Verdict` holds what every search has (the trials' tally, the best trial) and the parts its
objective adds (:mod:`rnn_lightning.tune.objectives`): a :class:`SearchTest` (the SPA test and StepM over
every trial's per-day losses, the detectable ratio) and a :class:`HeldOut` (the chosen configuration on
days no trial saw, with their rows) for prices; a :class:`Tested` (the best checkpoint on the test split)
for images. :meth:`Verdict.as_dict` is ``summary.json``; :meth:`Verdict.from_summary` reads one back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class SearchTest:
    """The search corrected for its searching: SPA and StepM over the trials, and the test's resolution."""

    tuning_days: int | None
    spa_pvalue: float
    stepm_superior: list[Any] = field(default_factory=list)
    detectable_ratio: float | None = None
    bootstrap: dict[str, Any] = field(default_factory=dict)
    identical_to_naive: list[int] = field(default_factory=list)
    spa_pvalue_lower: float | None = None
    spa_pvalue_upper: float | None = None

    @property
    def level(self) -> float:
        """The SPA p-value below which the verdict is "beats" (StepM's family-wise error rate)."""
        return float(self.bootstrap.get("size", 0.05))

    def as_dict(self) -> dict[str, Any]:
        return {
            "tuning_days": self.tuning_days,
            "bootstrap": self.bootstrap,
            "identical_to_naive": self.identical_to_naive,
            "spa_pvalue": self.spa_pvalue,
            "spa_pvalue_lower": self.spa_pvalue_lower,
            "spa_pvalue_upper": self.spa_pvalue_upper,
            "stepm_superior": self.stepm_superior,
            "detectable_ratio": self.detectable_ratio,
        }


@dataclass(frozen=True)
class HeldOut:
    """The chosen configuration on the held-out days (``days`` 0: none were held out).

    ``rows`` (date, actual, predicted, naive, se, naive_se) is ``holdout.csv``; not in ``summary.json``.
    """

    days: int = 0
    rmse_ratio: float | None = None
    dm_pvalue: float | None = None
    start: str | None = None
    end: str | None = None
    rows: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    mase_ratio: float | None = None  # panels: MASE to the seasonal naive's (``days``: forecast dates)

    @property
    def ratio(self) -> float | None:
        """The chosen configuration's ratio to its benchmark: RMSE (prices) or MASE (panels)."""
        return self.rmse_ratio if self.rmse_ratio is not None else self.mase_ratio

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "holdout_days": self.days,
            "holdout_rmse_ratio": self.rmse_ratio,
            "holdout_dm_pvalue": self.dm_pvalue,
        }
        if self.mase_ratio is not None:
            out["holdout_mase_ratio"] = self.mase_ratio
        if self.start is not None:
            out.update(holdout_start=self.start, holdout_end=self.end)
        return out


@dataclass(frozen=True)
class Tested:
    """The best trial's checkpoint tested once on the untouched test split, or why it could not be here."""

    metrics: dict[str, float] | None = None
    checkpoint: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.metrics is None:
            return {"test_note": self.note}
        return {"test_metrics": self.metrics, "best_checkpoint": self.checkpoint}


@dataclass(frozen=True)
class Verdict:
    """Everything ``rnn-lightning tune`` concludes; ``summary.json`` is :meth:`as_dict`.

    Attributes:
        task: The data's task (its kind's).
        completed: Trials scored to the end, the K of the SPA test; ``pruned``, ``failed`` and ``running``
            are left out of it.
        best_score: The best trial's score: its RMSE ratio to the naive forecast over the tuning folds
            (``objective`` ``rmse_ratio``), or another named score (``val_loss``) printed as it is.
        best_dm_pvalue: Its own Diebold-Mariano p-value, as if it had been the only trial (prices).
        search: The SPA test, StepM and detectable ratio (prices); None: no such test.
        holdout: The chosen configuration on held-out days (prices); None: no sentence.
        tested: The best checkpoint on the test split (images).
        study, storage: The study's name and its storage (password hidden).
        files: What the run folder holds.
    """

    task: str
    completed: int
    best_score: float
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best_trial: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_dm_pvalue: float | None = None
    objective: str = "rmse_ratio"
    search: SearchTest | None = None
    holdout: HeldOut | None = None
    tested: Tested | None = None
    study: str | None = None
    storage: str | None = None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``summary.json``'s contents, the paragraph (``verdict``) last."""
        out: dict[str, Any] = {
            "task": self.task,
            "completed": self.completed,
            "pruned": self.pruned,
            "failed": self.failed,
            "running": self.running,
            "best_trial": self.best_trial,
            "best_params": self.best_params,
            "best_score": self.best_score,
            "best_dm_pvalue": self.best_dm_pvalue,
            "objective": self.objective,
        }
        if self.search is not None:
            out.update(self.search.as_dict())
        else:
            out.update(spa_pvalue=None, stepm_superior=[], detectable_ratio=None)
        if self.holdout is not None:
            out.update(self.holdout.as_dict())
        if self.tested is not None:
            out.update(self.tested.as_dict())
        out.update(study=self.study, storage=self.storage, files=self.files, verdict=self.paragraph())
        return out

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> Verdict:
        """A verdict from ``summary.json``'s keys (those absent take their defaults)."""
        search = None
        if summary.get("spa_pvalue") is not None:
            search = SearchTest(
                tuning_days=summary.get("tuning_days"),
                spa_pvalue=float(summary["spa_pvalue"]),
                stepm_superior=list(summary.get("stepm_superior") or []),
                detectable_ratio=summary.get("detectable_ratio"),
                bootstrap=dict(summary.get("bootstrap") or {}),
                identical_to_naive=list(summary.get("identical_to_naive") or []),
                spa_pvalue_lower=summary.get("spa_pvalue_lower"),
                spa_pvalue_upper=summary.get("spa_pvalue_upper"),
            )
        holdout = None
        if "holdout_days" in summary:
            holdout = HeldOut(
                days=int(summary.get("holdout_days") or 0),
                rmse_ratio=summary.get("holdout_rmse_ratio"),
                dm_pvalue=summary.get("holdout_dm_pvalue"),
                start=summary.get("holdout_start"),
                end=summary.get("holdout_end"),
                mase_ratio=summary.get("holdout_mase_ratio"),
            )
        tested = None
        if summary.get("test_metrics") or summary.get("test_note"):
            tested = Tested(summary.get("test_metrics"), summary.get("best_checkpoint"), summary.get("test_note"))
        return cls(
            task=str(summary.get("task") or ""),
            completed=int(summary["completed"]),
            best_score=float(summary["best_score"]),
            pruned=int(summary.get("pruned") or 0),
            failed=int(summary.get("failed") or 0),
            running=int(summary.get("running") or 0),
            best_trial=summary.get("best_trial"),
            best_params=dict(summary.get("best_params") or {}),
            best_dm_pvalue=summary.get("best_dm_pvalue"),
            objective=str(summary.get("objective") or "rmse_ratio"),
            search=search,
            holdout=holdout,
            tested=tested,
            study=summary.get("study"),
            storage=summary.get("storage"),
            files=list(summary.get("files") or []),
        )

    def paragraph(self) -> str:
        """The paragraph ``rnn-lightning tune`` prints after searching: the best trial, corrected for the search.

        Each sentence follows its numbers: the SPA p-value against the level decides between "at least one
        configuration beats the naive forecast" and "no configuration beats the naive forecast".
        """
        left_out = [f"{_count(n, 'trial')} {key}" for key, n in (("pruned", self.pruned), ("failed", self.failed)) if n]
        aside = f" ({' and '.join(left_out)} left out)" if left_out else ""
        what, where, benchmark, days = SCORES.get(
            self.objective, (self.objective, "on the validation split", "the naive forecast", "days")
        )
        own = self.best_dm_pvalue
        sentences = [
            f"Best of {_count(self.completed, 'completed trial')}{aside}: {what} {self.best_score:.3f} {where}"
            + (f" (DM {_p(own)} on its own)." if own is not None else ".")
        ]
        if self.tested is not None and self.tested.metrics:
            shown = ", ".join(f"{k} {float(v):.4f}" for k, v in sorted(self.tested.metrics.items()))
            sentences.append(f"Tested once on the untouched test split: {shown}.")
        if self.search is not None:
            spa = self.search.spa_pvalue
            if spa < self.search.level:
                superior = self.search.stepm_superior
                named = f"StepM: trials {', '.join(map(str, superior))}" if superior else "StepM names no single trial"
                finding = f"at least one configuration beats {benchmark} ({named})"
            else:
                finding = f"no configuration beats {benchmark}"
            sentences.append(f"Accounting for {_count(self.completed, 'trial')}, SPA {_p(spa)}: {finding}.")
        if self.holdout is not None:
            ratio = self.holdout.ratio
            if self.holdout.days and ratio is not None:
                dm = self.holdout.dm_pvalue
                sentences.append(
                    f"On the {self.holdout.days} held-out {days} the chosen configuration's ratio is "
                    f"{ratio:.3f}" + (f" (DM {_p(dm)})." if dm is not None else ".")
                )
            else:
                sentences.append(f"No {days} were held out, so the chosen configuration has no untouched test.")
        test = self.search
        # Prices say how small a ratio their days could detect (None there: too few days); others have no such test.
        if (
            test is not None
            and test.tuning_days is not None
            and (self.objective == "rmse_ratio" or test.detectable_ratio)
        ):
            count, detectable = test.tuning_days, test.detectable_ratio
            if detectable is None or math.isnan(detectable):
                sentences.append(f"These {count} tuning {days} are too few to detect any edge on the searched grid.")
            else:
                sentences.append(f"These {count} tuning {days} would detect a ratio of {detectable:.3f} or lower.")
        return " ".join(sentences)


# A score's words in the paragraph: what it is, where it was measured, its benchmark, its time unit.
SCORES = {
    "rmse_ratio": ("RMSE ratio", "over the tuning folds", "the naive forecast", "days"),
    "mase_ratio": ("MASE ratio", "over the tuning folds", "the seasonal naive forecast", "forecast dates"),
}


def _p(value: float) -> str:
    """``p = 0.041`` (two significant digits) or ``p < 0.001``."""
    return "p < 0.001" if value < 0.001 else f"p = {value:.2g}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
