"""The signature of a workflow's results: a hash of its config, backtest settings and data.

Backtest folds (price and panel) and search studies are signed by :func:`config_signature`; merge and
resume compare signatures. Its own module, so that every workflow can import it without a cycle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnn_lightning import runs
    from rnn_lightning.backtest.plan import BacktestSettings

# Config keys that do not change any fold's result, left out of the run's signature (merge compares it).
UNSIGNED_KEYS = (
    "config",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "plots",
    "predictions",
    "data.init_args.csv_path",
)
# Settings that say how the folds were spread over processes or runs, not what they compute.
UNSIGNED_SETTINGS = ("shard", "merge", "workers", "resume")


def config_signature(
    config: runs.RunConfig,
    settings: BacktestSettings,
    data: Iterable[bytes],
    *,
    unsigned: Sequence[str] = UNSIGNED_KEYS,
    **extra: Any,
) -> str:
    """A hash of everything that decides a workflow's results: config, folds, ``extra`` values and data.

    The config less the ``unsigned`` keys, the backtest settings less :data:`UNSIGNED_SETTINGS`, the
    ``extra`` values (a search adds its space and hold-out) and the data's bytes, in order. The one
    signature of a backtest's folds (:func:`signature`, which merge compares) and of a search's study
    (:func:`rnn_lightning.tune.study.study_signature`).
    """
    values = config.namespace.clone()
    for key in unsigned:
        if key in values:
            del values[key]
    folds = {k: v for k, v in asdict(settings).items() if k not in UNSIGNED_SETTINGS}
    text = json.dumps({"config": values.as_dict(), "backtest": folds, **extra}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode())
    for chunk in data:
        digest.update(chunk)
    return digest.hexdigest()[:16]
