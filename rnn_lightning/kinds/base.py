"""What a kind of data tells the workflows: the :class:`DataKind` interface and the registry of kinds.

A data module names its kind (``kind = "daily_prices"``, a class attribute); every workflow asks that
object instead of comparing names:

* **task**: the head family that serves it (heads declare the task they are for);
* **report**: the figures of fit/test/predict and the rows of ``predictions.csv``;
* **tune objective**: how ``tune`` scores a trial and judges the search (a key of ``tune``'s objectives:
  ``backtest``, walk-forward against a baseline, or ``validation``, the best validation loss);
* **backtest plan**: how ``backtest`` cuts its folds (a key of ``backtest``'s plans: ``walk_forward``
  through one series' days, or ``rolling_origins``, the last horizons of every series of a panel);
* **baseline**: the forecast a model must beat, when the kind has one (the naive forecast for prices);
* **export ports**: the exported graph's inputs (names, dtypes, shapes), the module that becomes the
  graph, and the samples the exported file is checked on.

Adding a kind is one module that subclasses :class:`DataKind` and calls :func:`register` (a test does
this with a toy kind); no workflow changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

from torch import Tensor, nn

from rnn_lightning.errors import UserInputError


@dataclass(frozen=True)
class Port:
    """One named input or output of an exported graph: dtype and shape, ``batch`` being dynamic."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    description: str

    def as_dict(self) -> dict[str, Any]:
        """The port as JSON values (the exported file's metadata)."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "description": self.description}


class ServingModule(nn.Module):
    """The module an export traces: a kind's raw inputs in, the named forecast rows (``outputs``) out."""

    outputs: tuple[str, ...]  # the model's forecast rows returned, in order

    def __init__(self, model: Any, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs


class DataKind:
    """One kind of data: what fit, test, predict, backtest, tune and export need to know of it.

    Subclasses set the class attributes and implement the export methods; one instance of each is
    registered under its :attr:`name`.
    """

    name: ClassVar[str]
    task: ClassVar[str]  # the task the heads serving this kind declare
    tune_objective: ClassVar[str]  # a key of rnn_lightning.tune's objectives
    walks_forward: ClassVar[bool] = False  # one time order a backtest can walk through (rolling origins)
    backtest_plan: ClassVar[str] = "walk_forward"  # a key of rnn_lightning.backtest.run.BACKTESTS
    baseline: ClassVar[str | None] = None  # the forecast a model must beat (its metrics' ``naive_`` prefix)
    report: ModuleType  # figures(model, datamodule, stage, max_images), table(datamodule, rows), summary
    default_outputs: ClassVar[tuple[str, ...]]  # the forecast rows an exported file returns by default
    output_descriptions: ClassVar[dict[str, str]] = {}

    # --- export ------------------------------------------------------------------------------------------

    def serving_module(self, model: Any, outputs: tuple[str, ...]) -> ServingModule:
        """The module that becomes the exported graph: raw inputs in, the model's forecast rows out."""
        raise NotImplementedError

    def check_batch(self, datamodule: Any) -> Any:
        """The raw samples an exported file is checked on (a batch of the data module's own type)."""
        raise NotImplementedError

    def export_inputs(self, model: Any, batch: Any) -> tuple[Tensor, ...]:
        """The exported graph's inputs for ``batch``, in the graph's input order and dtypes."""
        raise NotImplementedError

    def input_ports(self, model: Any, wrapper: ServingModule) -> list[Port]:
        """The exported graph's inputs, described (names, dtypes, shapes)."""
        raise NotImplementedError

    def output_description(self, key: str) -> str:
        """What one forecast row of an exported file holds."""
        return self.output_descriptions.get(key, key)


KINDS: dict[str, DataKind] = {}


def register(kind: DataKind) -> DataKind:
    """Add ``kind`` to the registry under its name (a second kind of that name is an error)."""
    if kind.name in KINDS and type(KINDS[kind.name]) is not type(kind):
        raise ValueError(f"data kind {kind.name!r} is registered already ({type(KINDS[kind.name]).__name__})")
    KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> DataKind:
    """The registered kind of that name; an unknown name is one line listing the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise UserInputError(f"unknown data kind {name!r}; the kinds are {', '.join(sorted(KINDS))}") from None


def kind_of(datamodule: Any) -> DataKind:
    """The kind a data module names (its ``kind`` attribute)."""
    name = getattr(datamodule, "kind", None)
    if not isinstance(name, str):
        raise UserInputError(f"data module {type(datamodule).__name__} names no data kind (a `kind` attribute)")
    return kind_named(name)


def report_of(datamodule: Any) -> ModuleType | None:
    """The report of a data module's kind; None for a data module of no registered kind (nothing to draw)."""
    name = getattr(datamodule, "kind", None)
    return KINDS[name].report if isinstance(name, str) and name in KINDS else None


def kinds() -> Iterator[DataKind]:
    """Every registered kind."""
    yield from KINDS.values()
