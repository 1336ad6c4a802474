"""Forked worker processes: how a backtest's folds and a search's trials run several at once on one machine.

Forked, so that every worker starts with this process's imports, config and read data: nothing is parsed,
imported or read again. A worker that meets a bad input prints the CLI's one-line error and exits 2; the
parent then ends the run with one line naming the worker (exit status 1, or 2 for a bad input). An
interrupted parent takes the workers down with it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rnn_lightning.errors import UserInputError, print_error


def _child(target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """One worker: ``target(*args)``; a bad input found only now ends it with the CLI's one-line error."""
    try:
        target(*args)
    except UserInputError as err:
        print_error(err)
        raise SystemExit(2) from None


def run_forked(
    name: str,
    target: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    after_failure: str,
    progress: Callable[[], None] | None = None,
    poll: float = 1.0,
) -> None:
    """Run ``target(*args[w])`` in one forked process per entry of ``args`` and wait for them all.

    Args:
        name: The workflow's name: processes ``NAME-worker-K``, and the failure's line.
        target: What each worker runs (on its own share of the work).
        args: One tuple of ``target``'s arguments per worker.
        after_failure: What the failure's line adds (where the finished work is, how to go on).
        progress: Called every ``poll`` seconds while workers run (a progress bar over all of them).
        poll: Seconds between two ``progress`` calls.
    """
    import multiprocessing

    sys.stdout.flush()  # or the children would print what this process buffered, again
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_child, args=(target, tuple(a)), name=f"{name}-worker-{w + 1}")
        for w, a in enumerate(args)
    ]
    for process in processes:
        process.start()
    try:
        if progress is not None:
            while any(p.is_alive() for p in processes):
                progress()
                time.sleep(poll)
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():  # interrupted: take the others down too
                process.terminate()
                process.join()
    failed = [(w + 1, p.exitcode) for w, p in enumerate(processes) if p.exitcode]
    if failed:
        worker, code = failed[0]
        print_error(f"{name} worker {worker} of {len(processes)} failed (exit status {code}); {after_failure}")
        raise SystemExit(2 if code == 2 else 1)
