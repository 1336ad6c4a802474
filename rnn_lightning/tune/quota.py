"""Exactly ``--tune.trials`` finished trials across every process and machine working on one study.

Optuna's ``MaxTrialsCallback`` stops a process once the count is reached, but two processes that each see
``trials - 1`` finished trials start one more each. Here a trial claims its slot first thing: it counts the
finished trials and the running trials numbered before it (trial numbers are unique per study, handed out
by the storage); when those fill the quota it marks itself ``surplus`` and ends as failed without running,
so the later of two racing trials yields. A running trial that dies is failed by its stale heartbeat, and
a new trial takes the freed slot.
"""

from __future__ import annotations

from typing import Any


class Surplus(Exception):
    """A trial started after the quota was filled by finished and earlier running trials; it does not run."""


def counts(study: Any) -> tuple[int, int]:
    """Finished (complete or pruned) and running trials of ``study``, less the surplus ones."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    running = sum(t.state == TrialState.RUNNING and not t.user_attrs.get("surplus") for t in trials)
    return finished, running


def claim(trial: Any, quota: int) -> None:
    """Raise :class:`Surplus` (after marking the trial) unless this trial has a slot of the ``quota``."""
    from optuna.trial import TrialState

    others = trial.study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in others)
    ahead = sum(
        t.state == TrialState.RUNNING and t.number < trial.number and not t.user_attrs.get("surplus") for t in others
    )
    if finished + ahead >= quota:
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: the {quota} trials are finished or running elsewhere")
