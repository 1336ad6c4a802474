"""A search space: the config's own dotted keys and their ranges, read from a YAML file and checked up front.

::

    model.backbone: {choices: [rnn, lstm, gru]}
    model.hidden_size: {low: 4, high: 64, log: true}
    model.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    data.init_args.sequence_length: {low: 5, high: 60}

``choices`` draws one of the values; ``low``/``high`` draws an int when both bounds are ints and a float
otherwise, on a log scale with ``log: true``, on a grid with ``step``. Every choice and both bounds of
every range go through the run parser and build the run's classes before any trial runs
(:meth:`SearchSpace.check`), so an unknown key, a value of the wrong type or a setting the model refuses
(``dropout: 1.5``) is a one-line error before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rnn_lightning import runs
from rnn_lightning.errors import UserInputError, user_input_error

RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Dimension:
    """One searched key: a list of ``choices``, or a ``low``..``high`` range (int or float)."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.low, bool)

    def values_to_check(self) -> list[Any]:
        """The values every config of the space must accept: every choice, or both bounds."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        """Draw this key's value for an Optuna trial (``suggest_categorical``/``suggest_int``/``suggest_float``)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.is_int:
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


def _dimension(key: str, spec: Any, source: str) -> Dimension:
    where = f"{source}: {key}"
    if not isinstance(spec, dict):
        raise UserInputError(f"{where}: expected {{choices: [...]}} or {{low: ..., high: ...}}, got {spec!r}")
    if "choices" in spec:
        extra = set(spec) - {"choices"}
        choices = spec["choices"]
        if extra or not isinstance(choices, list) or not choices:
            raise UserInputError(f"{where}: choices must be a non-empty list and stand alone, got {spec!r}")
        if len({json.dumps(c, sort_keys=True, default=str) for c in choices}) != len(choices):
            raise UserInputError(f"{where}: a choice appears twice in {choices}")
        return Dimension(key, choices=tuple(choices))
    unknown = set(spec) - RANGE_KEYS
    if unknown or "low" not in spec or "high" not in spec:
        raise UserInputError(f"{where}: a range needs low and high (and optionally log, step), got {spec!r}")
    low, high = spec["low"], spec["high"]
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserInputError(f"{where}: {name} must be a number, got {value!r}")
    if low > high:
        raise UserInputError(f"{where}: low {low} is above high {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserInputError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise UserInputError(f"{where}: a log range needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise UserInputError(f"{where}: step must be a positive number, got {step!r}")
    if step is not None and log:
        raise UserInputError(f"{where}: step and log exclude each other (Optuna draws either on a grid or a log scale)")
    return Dimension(key, low=low, high=high, log=log, step=step)


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys, in the file's order."""

    dimensions: tuple[Dimension, ...]
    source: str

    @classmethod
    def read(cls, path: str | Path) -> SearchSpace:
        """Read and check a space file's shape (not yet its keys: :meth:`check` does that against a config)."""
        file = Path(path)
        if not file.is_file():
            raise UserInputError(f"tune.space {file}: no such file")
        try:
            spec = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f" (line {mark.line + 1})" if mark is not None else ""
            raise UserInputError(f"tune.space {file}: not valid YAML{line}") from None
        if not isinstance(spec, dict) or not spec:
            raise UserInputError(f"tune.space {file}: expected a mapping of dotted config keys to ranges")
        return cls(tuple(_dimension(str(k), v, f"tune.space {file}") for k, v in spec.items()), str(file))

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    def check(self, config: runs.RunConfig) -> None:
        """Every choice and bound, one key at a time, through the parser and the classes' own checks."""
        for dimension in self.dimensions:
            for value in dimension.values_to_check():
                try:
                    changed = config.override({dimension.key: value})
                    if changed.get(dimension.key) is None and value is not None:
                        raise UserInputError("not a key of the config")
                    runs.instantiate(runs.run_parser(), changed.namespace)
                except UserInputError as err:
                    message = str(err).replace(f"--{dimension.key}={value}", "").strip()
                    raise UserInputError(f"{self.source}: {dimension.key}={value!r} is refused: {message}") from None
                except Exception as err:  # jsonargparse wraps what the classes raise
                    found = user_input_error(err)
                    text = str(found or err).strip()
                    detail = text.splitlines()[0] if text else type(err).__name__
                    raise UserInputError(f"{self.source}: {dimension.key}={value!r} is refused: {detail}") from None

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One configuration's values, drawn for ``trial``."""
        return {d.key: d.suggest(trial) for d in self.dimensions}

    def digest(self) -> str:
        """A hash of the space, so that a study of another space is recognised."""
        text = json.dumps([d.__dict__ for d in self.dimensions], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
