"""The run factory: one config in, a fresh model, data module, callbacks and Trainer out, then one Trainer call.

Every way of running the project goes through here, so they all build a run the same way:

* ``rnn-lightning fit|validate|test|predict`` (:mod:`rnn_lightning.cli`) parses the command line with
  :func:`add_arguments` and hands each subcommand's config to :func:`build`;
* the workflows (``backtest``, ``tune``, ``export``) are plain functions of a config that build what they
  need here: the data alone (:func:`build_data`), a model (:func:`build_model`), one run per fold or
  trial (:func:`build`), the run folder (:func:`new_run_dir`);
* the Python API (:mod:`rnn_lightning.api`) loads a YAML file plus dotted overrides with :func:`load_config`.

A config is a :class:`RunConfig`: the parser of one run's arguments and the namespace it parsed. The parser
is the same for all of them (:func:`run_parser`), built from the same three steps the CLI's subcommands are
built from, so a run built from Python is the run the command line builds.

One file per job: :mod:`~rnn_lightning.runs.config` (the arguments and :class:`RunConfig`),
:mod:`~rnn_lightning.runs.runtime` (process settings, applied once per process),
:mod:`~rnn_lightning.runs.build` (a run, or a workflow's data module, model, placement and run folder) and
:mod:`~rnn_lightning.runs.execute` (inputs checked before a run folder exists, then one Trainer call).
"""

from rnn_lightning.runs.build import (
    Placement,
    Run,
    build,
    build_data,
    build_model,
    find_callback,
    instantiate,
    new_run_dir,
    placement,
    resume_logger,
)
from rnn_lightning.runs.config import (
    CALLBACK_GROUPS,
    LINKED_SIZES,
    TRAINER_DEFAULTS,
    RunConfig,
    add_arguments,
    add_core_arguments,
    add_default_arguments,
    data_task,
    load_config,
    parse_args,
    run_parser,
)
from rnn_lightning.runs.execute import (
    STAGES,
    check_checkpoint,
    fit,
    load_weights,
    predict,
    prepare_data,
    read_checkpoint,
    test,
    validate,
)
from rnn_lightning.runs.runtime import (
    EXPECTED_WARNINGS,
    apply_process_settings,
    prepare_process,
    quiet_lightning,
    quiet_warnings,
)

__all__ = [
    "CALLBACK_GROUPS",
    "EXPECTED_WARNINGS",
    "LINKED_SIZES",
    "STAGES",
    "TRAINER_DEFAULTS",
    "Placement",
    "Run",
    "RunConfig",
    "add_arguments",
    "add_core_arguments",
    "add_default_arguments",
    "apply_process_settings",
    "build",
    "build_data",
    "build_model",
    "check_checkpoint",
    "data_task",
    "find_callback",
    "fit",
    "instantiate",
    "load_config",
    "load_weights",
    "new_run_dir",
    "parse_args",
    "placement",
    "predict",
    "prepare_data",
    "prepare_process",
    "quiet_lightning",
    "quiet_warnings",
    "read_checkpoint",
    "resume_logger",
    "run_parser",
    "test",
    "validate",
]
