"""Each task's figures and prediction rows, beside each other: one module per task, one registry.

A task module provides ``figures(model, datamodule, stage, max_images) -> {name: Figure}``,
``table(datamodule, outputs) -> DataFrame`` (the rows of ``predictions.csv``) and ``summary(table) -> str``.
A third data source adds a module here and one entry below; the callbacks stay as they are.
"""

from __future__ import annotations

from types import ModuleType

from rnn_lightning.reports import kospi, mnist

# The data module's ``task`` -> the module that draws and tabulates it.
REPORTS: dict[str, ModuleType] = {"regression": kospi, "classification": mnist}
