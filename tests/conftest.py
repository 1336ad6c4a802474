"""Fixtures: tiny synthetic data written to tmp_path. Helpers shared by the tests live in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_mnist_dir, write_price_csv
from postgres import postgres_server


@pytest.fixture
def kospi_csv(tmp_path: Path) -> Path:
    """80 business days of synthetic Yahoo-format prices: 75 windows of 5 days."""
    return write_price_csv(tmp_path / "prices.csv")


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return write_mnist_dir(tmp_path / "mnist_data")


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A real PostgreSQL server for the test (tests/postgres.py): its SQLAlchemy URL, with password."""
    with postgres_server(tmp_path) as url:
        yield url
