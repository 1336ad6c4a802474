"""The ``postgres_url`` fixture gives a real PostgreSQL server, and an Optuna study on it is shared by processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    # Optuna's note on RDBStorage(heartbeat_interval=...), the tune command's setting.
    pytest.mark.filterwarnings("ignore:Argument ``heartbeat_interval`` is an experimental feature"),
]

N_COMPLETE = 6

# One worker of a study shared through the database: it waits for the other (a file barrier, so that both
# really run at once), then optimizes until MaxTrialsCallback sees N_COMPLETE complete trials. Several
# processes can each finish a trial past the limit (MaxTrialsCallback is checked after a trial, not
# before); the objective prunes the trials numbered past it, so exactly trials 0..N_COMPLETE-1 complete:
# that holds only if the storage hands out distinct, gap-free trial numbers across processes.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    url, name, n_complete = os.environ["PG_URL"], os.environ["STUDY"], int(os.environ["N_COMPLETE"])
    barrier, me = Path(os.environ["BARRIER"]), sys.argv[1]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1)
    study = optuna.load_study(study_name=name, storage=storage)
    (barrier / me).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 2:
        assert time.monotonic() < deadline, "the other worker never came"
        time.sleep(0.05)

    def objective(trial):
        trial.set_user_attr("pid", os.getpid())
        if trial.number >= n_complete:
            raise optuna.TrialPruned()
        x = trial.suggest_float("x", -1.0, 1.0)
        time.sleep(0.3)  # long enough for the two workers' trials to overlap
        return x * x

    study.optimize(objective, callbacks=[MaxTrialsCallback(n_complete, states=(TrialState.COMPLETE,))])
    """
)


def test_fixture_is_a_real_server(postgres_url: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    url = make_url(postgres_url)
    assert (url.drivername, url.host, url.database, url.username) == (
        "postgresql+psycopg2",
        "127.0.0.1",
        "tune",
        "postgres",
    )
    assert url.password and url.port
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            assert connection.execute(text("select version()")).scalar_one().startswith("PostgreSQL ")
            connection.execute(text("create table runs (id serial primary key, loss double precision)"))
            connection.execute(text("insert into runs (loss) values (0.5), (0.25)"))
        with engine.connect() as connection:
            assert connection.execute(text("select sum(loss) from runs")).scalar_one() == 0.75
    finally:
        engine.dispose()
    # The password is required: a wrong one is refused.
    wrong = create_engine(url.set(password="wrong"))
    try:
        with pytest.raises(Exception, match="password authentication failed"), wrong.connect():
            pass
    finally:
        wrong.dispose()


def test_optuna_study_shared_by_two_processes(postgres_url: str, tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    name = "shared"
    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1)
    optuna.create_study(study_name=name, storage=storage, direction="minimize")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PG_URL": postgres_url, "STUDY": name, "N_COMPLETE": str(N_COMPLETE), "BARRIER": str(barrier)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for i in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=240)[0].decode(errors="replace") for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output

    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_COMPLETE, [(t.number, t.state) for t in trials]
    assert sorted(t.number for t in complete) == list(range(N_COMPLETE))
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) and sorted(numbers) == list(range(len(numbers)))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2, "both processes ran trials"
    storage.engine.dispose()
