"""Walk-forward (rolling-origin) backtesting: many fits of one config over consecutive test periods.

``rnn-lightning backtest`` takes the same config and data options as ``fit`` plus the ``--backtest.*``
settings of :class:`BacktestSettings`, and answers two questions: over many test periods, is the model's
one-day-ahead forecast better than the naive forecast (tomorrow's close = today's), and is the difference
more than luck? See docs/backtest.md for the options, the outputs and every statistic's formula.

One module per job: :mod:`.plan` (settings and folds), :mod:`.stats` (the statistics), :mod:`.outputs`
(the run folder's files) and :mod:`.run` (the folds, each a run of :mod:`rnn_lightning.runs`).
"""

from rnn_lightning.backtest.outputs import (
    FOLD_FILE,
    FOLD_ROWS,
    check_merge,
    read_fold_dirs,
    summary_lines,
    write_outputs,
)
from rnn_lightning.backtest.plan import (
    BacktestSettings,
    Fold,
    check_settings,
    check_workers,
    fold_view,
    leading_view,
    parse_shard,
    plan_folds,
    resolve_workers,
    shard_folds,
    window_offset,
)
from rnn_lightning.backtest.run import fold_results, folds_for, run_backtest, signature
from rnn_lightning.backtest.stats import (
    block_bootstrap_ratio,
    diebold_mariano,
    direction_test,
    fold_metrics,
    rmse,
    summarise,
)

__all__ = [
    "FOLD_FILE",
    "FOLD_ROWS",
    "BacktestSettings",
    "Fold",
    "block_bootstrap_ratio",
    "check_merge",
    "check_settings",
    "check_workers",
    "diebold_mariano",
    "direction_test",
    "fold_metrics",
    "fold_results",
    "fold_view",
    "leading_view",
    "parse_shard",
    "folds_for",
    "plan_folds",
    "read_fold_dirs",
    "resolve_workers",
    "rmse",
    "run_backtest",
    "shard_folds",
    "signature",
    "summarise",
    "summary_lines",
    "window_offset",
    "write_outputs",
]
