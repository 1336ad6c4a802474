"""The validation benchmark's seasonal indices (try AO of docs/panels.md), against statsmodels' decomposition."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from statsmodels.tsa.seasonal import seasonal_decompose

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "tourism_validation.py"


def benchmark_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("tourism_validation", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seasonal_series(n: int, pattern: np.ndarray, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(1.0, 0.03, n)
    return (100 + 0.5 * t) * pattern[t % 12] * noise


def test_all_years_are_the_classical_multiplicative_decomposition() -> None:
    tv = benchmark_module()
    pattern = 1 + 0.4 * np.sin(2 * np.pi * np.arange(12) / 12)
    x = seasonal_series(151, pattern)  # not whole years: positions count from the series' start
    expected = seasonal_decompose(x, model="multiplicative", period=12).seasonal[:12]
    np.testing.assert_allclose(tv.seasonal_indices(x, years=100), expected, rtol=1e-10)


def test_the_last_years_only_see_the_recent_pattern() -> None:
    tv = benchmark_module()
    early = 1 + 0.4 * np.sin(2 * np.pi * np.arange(12) / 12)
    late = 1 + 0.4 * np.cos(2 * np.pi * np.arange(12) / 12)
    x = np.concatenate([seasonal_series(240, early), seasonal_series(72, late, seed=1)[:72]])
    recent = tv.seasonal_indices(x, years=4)
    assert np.abs(recent - late / late.mean()).max() < 0.05
    assert np.abs(tv.seasonal_indices(x, years=100) - late / late.mean()).max() > 0.1  # all years mix in the early one
