"""Each data kind's figures and prediction rows, one module per kind (named by :mod:`rnn_lightning.kinds`).

A report module provides ``figures(model, datamodule, stage, max_images) -> {name: Figure}``,
``table(datamodule, outputs) -> DataFrame`` (the rows of ``predictions.csv``) and ``summary(table) -> str``.
A kind names its report; the callbacks ask the kind.
"""
