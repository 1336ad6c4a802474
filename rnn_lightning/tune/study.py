"""The study: what every trial of one tune command shares, its storage, signature, sampler and pruner.

The study lives in an Optuna storage: by default a SQLite file under ``trainer.default_root_dir`` named
after the study, so that running the same command again continues it; ``--tune.storage URL`` takes a
PostgreSQL or MySQL database that many machines share. A study of another config, space, folds or data
is refused (its signature, :func:`study_signature`, shared with the backtest's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings
from rnn_lightning.backtest.signing import UNSIGNED_KEYS as BACKTEST_UNSIGNED_KEYS
from rnn_lightning.backtest.signing import config_signature
from rnn_lightning.errors import UserInputError
from rnn_lightning.tune.settings import TuneSettings
from rnn_lightning.tune.space import SearchSpace
from rnn_lightning.tune.storage import cannot_open, open_storage, redact, startup_lock

if TYPE_CHECKING:
    from rnn_lightning.tune.objectives import Objective

# Config keys that do not change a trial's result, left out of the study's signature: the backtest's, and
# where image files are (their content is in the data digest).
UNSIGNED_KEYS = (*BACKTEST_UNSIGNED_KEYS, "data.init_args.data_dir")


@dataclass(frozen=True)
class Search:
    """What every trial of one tune command shares.

    Attributes:
        config: The base config; each trial overrides it with its drawn values (:meth:`trial_config`).
        data: The base config's data module, read once: a trial whose data settings are the base's cuts
            its folds from it instead of reading the data again.
        objective: How a trial is scored and the search judged (the data kind's ``tune_objective``).
        task: The data kind's task (the study's ``task`` attribute, ``summary.json``'s ``task``).
        holdout: Held-out windows (days) at the end of the series (0: none, and always for images).
    """

    config: runs.RunConfig
    data: Any
    objective: Objective
    space: SearchSpace
    backtest: BacktestSettings
    settings: TuneSettings
    task: str
    holdout: int
    run_dir: Path
    signature: str

    def trial_config(self, params: dict[str, Any]) -> runs.RunConfig:
        return self.config.override(params)

    def trial_dir(self, trial: Any) -> Path:
        return self.run_dir / f"trial_{trial.number:04d}"


def study_signature(
    config: runs.RunConfig, space: SearchSpace, backtest: BacktestSettings, holdout: int, data_digest: str
) -> str:
    """A hash of everything that decides the trials' scores: config, space, folds, hold-out and data.

    The backtest's signature (:func:`rnn_lightning.backtest.signing.config_signature`) with the space and the
    hold-out added, and :func:`data_digest` as the data.
    """
    return config_signature(
        config, backtest, [data_digest.encode()], unsigned=UNSIGNED_KEYS, space=space.digest(), holdout=holdout
    )


def data_digest(datamodule: Any) -> str:
    """A hash of the read data, as the data module states it (:meth:`InMemoryDataModule.fingerprint`)."""
    return hashlib.sha256(datamodule.fingerprint()).hexdigest()[:16]


def default_storage(config: runs.RunConfig, study: str) -> str:
    """The embedded storage: ``<trainer.default_root_dir>/<study>.optuna.db`` (SQLite)."""
    root = Path(config.get("trainer.default_root_dir") or ".")
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / f'{study}.optuna.db').resolve()}"


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's "experimental feature" notes on heartbeats and its per-trial INFO lines (ours say more).

    Around the calls that make them only: the warning filters and Optuna's verbosity are restored after.
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def open_study(search: Search, url: str, create: bool) -> Any:
    """The study (created on first use); a study of another config, space or data is refused.

    Any number of processes may call this at the same moment on a fresh database: the storage is opened and
    the study created or loaded under the database's start-up lock (:mod:`rnn_lightning.tune.storage`).
    """
    import optuna

    name = study_name(search)
    with cannot_open(url), startup_lock(url), optuna_quiet():
        storage = open_storage(url, search.settings.heartbeat)
        if not create:
            return optuna.load_study(study_name=name, storage=storage)
        # load_if_exists, and no "A new study created" line: ours names the study and its storage.
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True)
        signature = study.user_attrs.get("signature")
        if signature is None:
            study.set_user_attr("signature", search.signature)
            study.set_user_attr("task", search.task)
            study.set_user_attr("space", search.space.keys)
        elif signature != search.signature:
            raise UserInputError(
                f"study {name!r} in {redact(url)} was run with another config, space, folds or data; "
                "name a new one with --tune.study NAME, or run the command it was started with"
            )
        return study


def study_name(search: Search) -> str:
    """``tune.study``, or the name of the first config file (``kospi_gru_returns``)."""
    if search.settings.study:
        return search.settings.study
    configs = search.config.get("config") or []
    first = Path(str(configs[-1])).stem if configs else "tune"  # the file given last (nested ones come first)
    return re.sub(r"[^\w.-]", "_", first)


def make_sampler(settings: TuneSettings, worker: int, existing: int = 0) -> Any:
    """The sampler of one process: seeded so that no two processes, and no resumed run, draw the same values.

    ``seed + worker + 1000 * existing`` (``existing``: trials the study held when the process started), so
    a fresh study on one machine draws the same configurations every time, and a resumed one does not
    repeat the draws of the run it continues. On a shared database (``--tune.storage``) the processes of
    many machines start at once with the same counts, so the process id is added there.
    """
    import optuna

    seed = settings.seed + worker + 1000 * existing + (os.getpid() if settings.storage else 0)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(settings: TuneSettings) -> Any:
    """The pruner: Optuna's median rule (see :class:`TuneSettings`), or none."""
    import optuna

    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    # After 5 finished trials, from the second fold on: one fold's ratio says little on its own.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
