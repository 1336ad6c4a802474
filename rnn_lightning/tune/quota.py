"""Exactly ``--tune.trials`` finished trials across every process and machine working on one study.

Optuna's ``MaxTrialsCallback`` stops a process once the count is reached, but two processes that each see
``trials - 1`` finished trials start one more each. Here a trial claims its slot first thing: it counts the
finished trials and the running trials numbered before it (trial numbers are unique per study, handed out
by the storage); when those fill the quota it marks itself ``surplus`` and ends as failed without running,
so the later of two racing trials yields. A running trial that dies is failed by its stale heartbeat, and
a new trial takes the freed slot.

:func:`tally` is the one count of a study's trials by state: the quota's, the progress lines' and the
verdict's.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class Surplus(Exception):
    """A trial started after the quota was filled by finished and earlier running trials; it does not run."""


@dataclass(frozen=True)
class Tally:
    """A study's trials by state, less the surplus ones (which yielded their slot without running)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0

    @property
    def finished(self) -> int:
        """Complete and pruned trials: what ``--tune.trials`` counts."""
        return self.complete + self.pruned


def tally(study: Any, running_before: int | None = None) -> Tally:
    """The trials of ``study`` by state; with ``running_before``, only running trials numbered before it."""
    states = [
        t.state.name
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get("surplus")
        and (running_before is None or t.state.name != "RUNNING" or t.number < running_before)
    ]
    return Tally(
        complete=states.count("COMPLETE"),
        pruned=states.count("PRUNED"),
        failed=states.count("FAIL"),
        running=states.count("RUNNING"),
    )


def claim(trial: Any, quota: int) -> None:
    """Raise :class:`Surplus` (after marking the trial) unless this trial has a slot of the ``quota``."""
    ahead = tally(trial.study, running_before=trial.number)
    if ahead.finished + ahead.running >= quota:
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: the {quota} trials are finished or running elsewhere")


class _SurplusUnlogged(logging.Filter):
    """Drops Optuna's two warnings about a surplus trial (one with a traceback): it did not run, nothing failed."""

    TRIAL = re.compile(r"Trial (\d+) failed")

    def __init__(self) -> None:
        super().__init__()
        self.surplus: set[str] = set()  # the trial numbers whose lines are dropped (on every handler)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        trial = self.TRIAL.match(message)
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, Surplus) or "Surplus(" in message:
            if trial:
                self.surplus.add(trial.group(1))
            return False
        return not (trial and trial.group(1) in self.surplus)  # Optuna's second line on the same trial


@contextlib.contextmanager
def surplus_unlogged() -> Iterator[None]:
    """Around ``study.optimize``: a trial that yields its slot (:class:`Surplus`) prints nothing.

    Optuna logs every caught exception as a failed trial, with its traceback, through the handlers of
    its library logger; the filter sits on those handlers for the block only. Any other failure is logged
    as before.
    """
    handlers = logging.getLogger("optuna").handlers
    surplus = _SurplusUnlogged()
    for handler in handlers:
        handler.addFilter(surplus)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(surplus)
