"""Target transforms and per-window normalisation: exact inverses, and no statistic from after training.

Every combination of ``target_transform`` x ``window_norm`` is covered by iterating the registries, so a
transform added later is tested without touching this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import KOSPI_CSV, fitted_numbers, fitted_scaling_module, make_price_frame

from rnn_lightning.data.daily import DailyPricesDataModule
from rnn_lightning.data.prices import DERIVED_FEATURES
from rnn_lightning.models.scaling import PRICE_COLUMNS, TARGET_TRANSFORMS

TRANSFORMS = sorted(TARGET_TRANSFORMS)
NORMS = ("none", "last_close")
# The tutorial's inputs, and every derived feature next to the close itself.
FEATURE_SETS = (["Open", "High", "Low", "Volume"], ["Open", "High", "Low", "Close", *DERIVED_FEATURES])
COMBOS = [(t, n, f) for t in TRANSFORMS for n in NORMS for f in FEATURE_SETS]


def combo_id(combo: tuple) -> str:
    transform, norm, features = combo
    return f"{transform}-{norm}-{len(features)}f"


def fitted_module(csv: Path, **kwargs) -> DailyPricesDataModule:
    kwargs.setdefault("split", 60)
    kwargs.setdefault("val_size", 10)
    dm = DailyPricesDataModule(str(csv), **kwargs)
    dm.setup("fit")
    return dm


def perturbed(frame: pd.DataFrame, rows: slice, factor: float = 1.7) -> pd.DataFrame:
    """``frame`` with prices scaled by ``factor`` (and the high widened) and volume tripled in ``rows``."""
    frame = frame.copy()
    index = frame.index[rows]
    for column in ("Open", "High", "Low", "Close", "Adj Close"):
        frame.loc[index, column] = frame.loc[index, column] * factor
    frame.loc[index, "High"] = frame.loc[index, "High"] * 1.05
    frame.loc[index, "Volume"] = frame.loc[index, "Volume"] * 3
    return frame


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_inverts_its_forward_exactly(name: str) -> None:
    """``inverse(forward(close, ref), ref) == close`` in float64, and 0 is persistence where it should be."""
    rng = np.random.default_rng(1)
    ref = 2000 * np.exp(rng.normal(0, 0.2, 500))
    close = ref * np.exp(rng.normal(0, 0.03, 500))
    transform = TARGET_TRANSFORMS[name]
    close, ref = torch.from_numpy(close), torch.from_numpy(ref)
    back = transform.inverse(transform.forward(close, ref), ref)
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, close, rtol=1e-13, atol=0)
    if transform.centred_at_zero:
        persistence = transform.inverse(torch.zeros(500, dtype=torch.float64), ref)
        assert torch.equal(persistence, ref)


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_to_price_recovers_the_true_close(combo: tuple, kospi_csv: Path) -> None:
    """Scale the module's own targets, then ``to_price``: the true next-day close, in every split."""
    transform, norm, features = combo
    dm = fitted_module(kospi_csv, target_transform=transform, window_norm=norm, features=features)
    scaling = fitted_scaling_module(dm)
    windows = dm.windows()
    unscaled = scaling.targets(windows.close, windows.ref)  # (W,) float64
    scaled = (unscaled - scaling.target_offset) / scaling.target_scale
    torch.testing.assert_close(scaling.to_price(scaled, windows.ref), windows.close, rtol=1e-12, atol=0)
    # The float32 targets the model trains on come back within float32 precision, split by split.
    for split in ("train", "val", "test"):
        part = dm.windows(split)
        y = scaling.scale_targets(part.close, part.ref)
        assert y.dtype == torch.float32 and part.close.dtype == torch.float64
        torch.testing.assert_close(scaling.to_price(y, part.ref), part.close, rtol=1e-5, atol=0)
    if TARGET_TRANSFORMS[transform].centred_at_zero:
        assert float(scaling.target_offset) == 0.0
        ref = windows.ref
        assert torch.equal(scaling.to_price(torch.zeros(len(ref)), ref), ref)  # output 0 == persistence


@pytest.mark.parametrize("features", FEATURE_SETS, ids=lambda f: f"{len(f)}f")
def test_last_close_window_norm_inverts_to_the_raw_window(features: list[str], kospi_csv: Path) -> None:
    """Each window's price columns times (1 + its last close) give back the raw prices; others untouched."""
    normed = fitted_module(kospi_csv, features=features, window_norm="last_close")
    scaling = fitted_scaling_module(normed)
    windows = normed.windows()
    raw = windows.x.numpy()  # (W, T, F)
    rel = scaling.windows(windows.x, windows.ref).numpy()  # (W, T, F)
    ref = windows.ref.numpy()[:, None]  # (W, 1)
    for j, name in enumerate(features):
        if name in PRICE_COLUMNS:
            np.testing.assert_allclose((rel[:, :, j] + 1.0) * ref, raw[:, :, j], rtol=1e-13, atol=0)
            if name == "Close":
                assert np.all(rel[:, -1, j] == 0.0)  # the reference itself
        else:
            np.testing.assert_array_equal(rel[:, :, j], raw[:, :, j])
    # The forecast window (the CSV's last rows) is normalised the same way, against the last close.
    tomorrow = normed.forecast_window()
    last = normed.raw_features[-normed.sequence_length :].numpy().copy()  # (T, F)
    for j, name in enumerate(features):
        if name in PRICE_COLUMNS:
            last[:, j] = last[:, j] / normed.close[-1].item() - 1.0
    np.testing.assert_allclose(scaling.windows(tomorrow.x, tomorrow.ref)[0].numpy(), last, rtol=1e-13)


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_scaling_ignores_rows_after_the_training_part(combo: tuple, tmp_path: Path) -> None:
    """Changing every row after the training windows' rows leaves the fitted scaling and the training
    batches unchanged; changing the last training row, or fitting on all rows, does change it."""
    transform, norm, features = combo
    frame = make_price_frame(80, seed=3)
    options = dict(target_transform=transform, window_norm=norm, features=features)

    def fitted(frame: pd.DataFrame, name: str, scaler_fit: str = "train") -> DailyPricesDataModule:
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        return fitted_module(tmp_path / f"{name}.csv", scaler_fit=scaler_fit, **options)

    base = fitted(frame, "base")
    rows = base.fit_rows
    assert rows == base.num_train + base.sequence_length < len(frame)
    later = fitted(perturbed(frame, slice(rows, None)), "later")
    assert fitted_numbers(later) == fitted_numbers(base)
    for got, want in zip(later.windows("train"), base.windows("train"), strict=True):
        assert torch.equal(got, want)
    # The guard is sharp: the last row the training windows use (their last target) does count ...
    last_train_row = fitted(perturbed(frame, slice(rows - 1, rows)), "last_train_row")
    assert fitted_numbers(last_train_row) != fitted_numbers(base)
    # ... and the tutorial's leaky scaler_fit=all sees the later rows.
    leaky = fitted(frame, "all", "all")
    leaky_later = fitted(perturbed(frame, slice(rows, None)), "all_later", "all")
    assert fitted_numbers(leaky_later) != fitted_numbers(leaky)


REAL = "real"


@pytest.mark.parametrize("source", ["synthetic", REAL])
def test_tutorial_level_scaler_spans_exactly_the_training_rows(source: str, tmp_path: Path) -> None:
    """Tutorial setup (level target, split 200, val 20): MinMax ranges are those of the 185 rows the 180
    training windows use, inputs and targets, and nothing from the validation or test rows."""
    if source == "real":
        csv = KOSPI_CSV
    else:
        csv = tmp_path / "prices.csv"
        make_price_frame(431, seed=5).to_csv(csv, index=False)
    features = ["Open", "High", "Low", "Volume"]
    dm = fitted_module(csv, split=200, val_size=20, features=features)
    assert (dm.num_train, dm.num_val, dm.num_windows - dm.num_train - dm.num_val) == (180, 20, 226)
    assert dm.fit_rows == 185
    frame = pd.read_csv(csv)
    train_rows = frame.iloc[:185]
    fitted = fitted_numbers(dm)
    assert fitted["feature_min"] == train_rows[features].min().astype(float).tolist()
    assert fitted["feature_max"] == train_rows[features].max().astype(float).tolist()
    assert fitted["target_offset"] == [train_rows["Close"].min()]
    assert fitted["target_scale"] == [train_rows["Close"].max() - train_rows["Close"].min()]
    # Scaled training inputs lie in [0, 1]; the test period may leave that range.
    train = dm.windows("train")
    x_train = fitted_scaling_module(dm).scale_inputs(train.x, train.ref)
    assert x_train.min() >= 0 and x_train.max() <= 1
