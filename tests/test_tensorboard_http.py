"""A real TensorBoard server, asked through its HTTP API what a person would see after fit and test."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import CONFIGS, run_cli

pytestmark = pytest.mark.slow  # a server start and four CLI runs: about 15 s on 2 cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def fit_and_test(root: Path, *args: object) -> None:
    common = [*args, "--trainer.default_root_dir", root]
    run_cli("fit", *common, "--trainer.max_epochs", "2")
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    run_cli("test", *common, "--ckpt_path", ckpt)


def wait_for_tags(base: str, runs: list[str], deadline: float) -> tuple[dict, dict]:
    """Poll until TensorBoard has loaded every run (it reads event files in the background)."""
    scalars: dict = {}
    images: dict = {}
    while time.monotonic() < deadline:
        try:
            scalars = get_json(f"{base}/data/plugin/scalars/tags")
            images = get_json(f"{base}/data/plugin/images/tags")
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        if all(run in scalars and run in images for run in runs):
            return scalars, images
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard did not list {runs}; scalars {list(scalars)}, images {list(images)}")


def test_tensorboard_lists_scalars_and_images(kospi_csv: Path, mnist_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fit_and_test(
        root / "kospi",
        "--config",
        CONFIGS / "kospi_gru.yaml",
        "--data.csv_path",
        kospi_csv,
        "--data.split",
        "50",
        "--data.val_size",
        "10",
    )
    fit_and_test(
        root / "mnist",
        "--config",
        CONFIGS / "mnist_bilstm.yaml",
        "--data.data_dir",
        mnist_dir,
        "--data.download",
        "false",
        "--data.val_size",
        "20",
        "--data.batch_size",
        "50",
        "--model.hidden_size",
        "4",
        "--model.num_layers",
        "1",
        "--trainer.log_every_n_steps",
        "1",
    )

    port = free_port()
    log = (tmp_path / "tensorboard.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(root),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
            "--reload_interval",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        runs = [f"{name}/lightning_logs/version_{v}" for name in ("kospi", "mnist") for v in (0, 1)]
        scalars, images = wait_for_tags(base, runs, time.monotonic() + 90)
        expected_test = {"kospi": "test_rmse", "mnist": "test_acc"}  # MNIST has no RMSE: accuracy instead
        for name, test_metric in expected_test.items():
            fit_run, test_run = f"{name}/lightning_logs/version_0", f"{name}/lightning_logs/version_1"
            assert {"train_loss", "val_loss"} <= scalars[fit_run].keys()
            assert {"test_loss", test_metric} <= scalars[test_run].keys()
            assert images[fit_run] and images[test_run], (name, images)
            points = get_json(f"{base}/data/plugin/scalars/scalars?run={test_run}&tag={test_metric}")
            # Each point is [wall time, step, value].
            assert len(points) == 1 and math.isfinite(points[0][2]) and points[0][2] >= 0
        assert "plots/prediction_test" in images["kospi/lightning_logs/version_1"]
        assert "plots/confusion_matrix_test" in images["mnist/lightning_logs/version_1"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
