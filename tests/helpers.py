"""Shared test helpers: tiny synthetic data, the real CLI entry point in-process, TensorBoard scalars."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnn_lightning.cli import main
from rnn_lightning.data.daily import EXAMPLE_CSV as KOSPI_CSV  # noqa: F401  (the bundled tutorial CSV)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
MNIST_TEST_DIR = SHARED_DATA / "mnist"


def make_price_frame(rows: int = 80, seed: int = 0) -> pd.DataFrame:
    """A random-walk daily price series in Yahoo's column layout, on business days."""
    rng = np.random.default_rng(seed)
    close = 2000 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    open_ = close * (1 + rng.normal(0, 0.003, rows))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, rows))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, rows))
    volume = rng.integers(200_000, 2_000_000, rows)
    dates = pd.bdate_range("2019-01-30", periods=rows)
    return pd.DataFrame(
        {
            "Date": dates.strftime("%Y-%m-%d"),
            "Open": open_.round(6),
            "High": high.round(6),
            "Low": low.round(6),
            "Close": close.round(6),
            "Adj Close": close.round(6),
            "Volume": volume,
        }
    )


def write_price_csv(path: Path, rows: int = 80, seed: int = 0) -> Path:
    make_price_frame(rows, seed).to_csv(path, index=False)
    return path


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write uint8 ``array`` as an IDX file (gzipped when the name ends in .gz)."""
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(data)
    return path


def make_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images whose class is drawn as a bright horizontal bar at row 2*label + 4,
    so a recurrent model reading rows can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4, 4:24] = 250
    return images, labels.astype(np.uint8)


def write_mnist_dir(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 60, gz: bool = True) -> Path:
    """torchvision's layout ``root/<folder>/raw/`` with tiny train and t10k IDX files."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = make_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return root


def kospi_args(config: Path | str, csv: Path | str, root: Path | str, *extra: object) -> list[object]:
    """The CLI arguments of a small KOSPI run: ``config`` on ``csv`` into ``root``, 50 windows before the
    test split, the last 10 of them validating, then ``extra``."""
    return [
        "--config",
        config,
        "--data.csv_path",
        csv,
        "--trainer.default_root_dir",
        root,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
        *extra,
    ]


def run_cli(*args: str) -> None:
    """The real ``rnn-lightning`` entry point, in-process."""
    main([str(a) for a in args])


def only_version_dir(root: Path) -> Path:
    versions = sorted((root / "lightning_logs").glob("version_*"))
    assert len(versions) == 1, versions
    return versions[0]


def events(path: Path, **size_guidance: int) -> EventAccumulator:
    """The TensorBoard events under ``path`` (a run folder or one events file), loaded."""
    return EventAccumulator(str(path), size_guidance=size_guidance or None).Reload()


def scalars(path: Path) -> dict[str, list[float]]:
    """Every scalar tag under ``path`` and its values in step order."""
    loaded = events(path, scalars=0)
    return {tag: [e.value for e in loaded.Scalars(tag)] for tag in loaded.Tags()["scalars"]}


def fitted_scaling_module(datamodule):
    """The model-side scaling a fit on ``datamodule`` (already set up) would carry."""
    from rnn_lightning.models.scaling import PriceScaling

    scaling = PriceScaling(**datamodule.scaling_spec)
    scaling.set_fitted(**datamodule.fitted_scaling())
    return scaling


def fitted_numbers(datamodule) -> dict[str, list[float]]:
    """``datamodule.fitted_scaling()`` as plain lists, for equality checks."""
    fitted = datamodule.fitted_scaling()
    return {k: (v.tolist() if hasattr(v, "tolist") else [float(v)]) for k, v in fitted.items()}
