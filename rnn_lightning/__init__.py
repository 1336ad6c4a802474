"""Recurrent networks (RNN, LSTM, GRU, Bi-LSTM) on daily prices and row-sequence MNIST, in Lightning.

The Python API is :mod:`rnn_lightning.api` (docs/python-api.md): ``load_config`` plus one function per
subcommand of the ``rnn-lightning`` command (``fit``, ``validate``, ``test``, ``predict``, ``backtest``,
``export``), each built on the run factory, :mod:`rnn_lightning.runs`.
"""

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.data.kospi import KospiDataModule
from rnn_lightning.data.rows import RowMNISTDataModule
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.backbones import BACKBONES, RecurrentBackbone
from rnn_lightning.models.module import RecurrentModel
from rnn_lightning.runs import Run, RunConfig
from rnn_lightning.version import __version__

__all__ = [
    "BACKBONES",
    "DailyPricesDataModule",
    "KospiDataModule",
    "RecurrentBackbone",
    "RecurrentModel",
    "RowMNISTDataModule",
    "Run",
    "RunConfig",
    "UserInputError",
    "__version__",
]
