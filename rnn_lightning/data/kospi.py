"""The old name of :class:`~rnn_lightning.data.daily.DailyPricesDataModule`, kept for existing configs.

Configs and checkpoints written before the rename name ``rnn_lightning.data.KospiDataModule`` (or
``rnn_lightning.data.kospi.KospiDataModule``); both still load. Lightning files a data module's state
under its class name, so an old checkpoint's state is found under ``KospiDataModule``.
"""

from __future__ import annotations

from rnn_lightning.data.daily import DailyPricesDataModule


class KospiDataModule(DailyPricesDataModule):
    """:class:`DailyPricesDataModule` under its old name (it reads any Yahoo-format daily CSV, not only KOSPI)."""
