"""The interface of a search's objective (:mod:`rnn_lightning.tune.objectives` holds the registry).

Apart from the registry so that an objective of its own module (:mod:`rnn_lightning.tune.panel_objective`)
can subclass it without importing the registry that lists it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings
from rnn_lightning.tune.settings import TuneSettings
from rnn_lightning.tune.summary import Verdict

if TYPE_CHECKING:
    from rnn_lightning.tune.study import Search


class Objective:
    """What a kind of data's search does its own way; the rest of the workflow is shared."""

    name: ClassVar[str]  # its key in OBJECTIVES (a kind's tune_objective)
    score: ClassVar[str]  # what a trial's value is: summary.json's "objective"

    def holdout(self, settings: TuneSettings, backtest: BacktestSettings) -> int:
        """The windows (days) at the end of the data that no trial sees."""
        return 0

    def check(self, data: Any, holdout: int, backtest: BacktestSettings) -> None:
        """The checks on the read data, before anything is written (one-line errors)."""

    def run_trial(self, search: Search, trial: Any, config: runs.RunConfig) -> float:
        """Train and score one trial of ``config`` (``trial`` reports to Optuna's pruner); its score."""
        raise NotImplementedError

    def judge(self, search: Search, study: Any, verdict: Verdict) -> Verdict:
        """The verdict with this objective's parts added (tests over the trials, the untouched data)."""
        return verdict

    def write(self, search: Search, study: Any, verdict: Verdict) -> list[str]:
        """This objective's own files in the run folder; their names."""
        return []
