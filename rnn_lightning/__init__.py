"""Recurrent networks (RNN, LSTM, GRU, Bi-LSTM) for KOSPI forecasting and row-sequence MNIST, in Lightning."""

from importlib.metadata import PackageNotFoundError, version

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.data.rows import RowMNISTDataModule
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.backbones import BACKBONES, RecurrentBackbone
from rnn_lightning.models.module import RecurrentModel

__all__ = [
    "BACKBONES",
    "DailyPricesDataModule",
    "RecurrentBackbone",
    "RecurrentModel",
    "RowMNISTDataModule",
    "UserInputError",
]
try:  # the one source of the version is pyproject.toml
    __version__ = version("rnn-lightning")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"
