"""The embedded storage of ``rnn-lightning tune``, chosen by measurement: SQLite (RDB) vs Optuna's journal file.

Several local processes work on one study at once, as ``--tune.workers N`` does. Each trial's objective
sleeps ``--trial-seconds`` (a stand-in for a backtest) and stores per-day losses in user attributes like a
tune trial does (``--days`` floats, three lists). Printed per storage: the wall time for all trials, the
storage's own time per trial (wall minus the sleeping, spread over the processes), the trials finished,
duplicated trial numbers and errors. Run from the repository root::

    python benchmarks/bench_tune_storage.py                       # 4 processes, 200 trials, 0.05 s each
    python benchmarks/bench_tune_storage.py --processes 2 --trials 100 --trial-seconds 0.5
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path


def storage_for(kind: str, folder: Path, heartbeat: bool):  # noqa: ANN201
    import optuna

    if kind == "sqlite":
        kwargs = {"heartbeat_interval": 10, "grace_period": 20} if heartbeat else {}
        return optuna.storages.RDBStorage(f"sqlite:///{folder / 'study.db'}", **kwargs)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.log")))


def work(kind: str, folder: Path, trials: int, seconds: float, days: int, heartbeat: bool, errors) -> None:  # noqa: ANN001
    import warnings

    import optuna

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=storage_for(kind, folder, heartbeat))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1, 1)
        time.sleep(seconds)
        for name in ("se", "naive_se", "naive_error"):
            trial.set_user_attr(name, [x] * days)
        return x * x

    try:
        study.optimize(
            objective,
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))],
        )
    except Exception as err:  # "database is locked" and the like: what this measures
        errors.put(f"{type(err).__name__}: {err}")


def measure(kind: str, processes: int, trials: int, seconds: float, days: int, heartbeat: bool) -> dict:
    import warnings

    import optuna

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench_tune_storage_") as name:
        folder = Path(name)
        optuna.create_study(study_name="bench", storage=storage_for(kind, folder, heartbeat))
        context = multiprocessing.get_context("spawn")
        errors = context.Queue()
        start = time.perf_counter()
        workers = [
            context.Process(target=work, args=(kind, folder, trials, seconds, days, heartbeat, errors))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name="bench", storage=storage_for(kind, folder, heartbeat))
        all_trials = study.get_trials()
        numbers = [t.number for t in all_trials]
        complete = [t for t in all_trials if t.state.name == "COMPLETE"]
        found = []
        while not errors.empty():
            found.append(errors.get())
    sleeping = len(complete) * seconds / processes
    return {
        "storage": kind + (" + heartbeat" if heartbeat and kind == "sqlite" else ""),
        "wall_s": wall,
        "overhead_ms_per_trial": 1000 * (wall - sleeping) * processes / max(1, len(all_trials)),
        "complete": len(complete),
        "trials": len(all_trials),
        "duplicate_numbers": len(numbers) - len(set(numbers)),
        "errors": len(found),
        "first_error": found[0] if found else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--trial-seconds", type=float, default=0.05)
    parser.add_argument("--days", type=int, default=600, help="floats per stored loss list (tuning days)")
    args = parser.parse_args()
    print(
        f"{args.processes} processes, {args.trials} trials of {args.trial_seconds} s, "
        f"3 x {args.days} floats stored per trial"
    )
    print("| storage | wall s | storage ms per trial | complete / created | duplicate numbers | errors |")
    print("|---|---|---|---|---|---|")
    for kind, heartbeat in (("sqlite", True), ("sqlite", False), ("journal", False)):
        row = measure(kind, args.processes, args.trials, args.trial_seconds, args.days, heartbeat)
        print(
            f"| {row['storage']} | {row['wall_s']:.1f} | {row['overhead_ms_per_trial']:.1f} | "
            f"{row['complete']} / {row['trials']} | {row['duplicate_numbers']} | {row['errors']} |"
            + (f" {row['first_error'][:80]}" if row["first_error"] else "")
        )


if __name__ == "__main__":
    main()
