"""The Python API as documented: every ``python`` block of docs/python-api.md runs as written, in order.

And what the API and the run factory promise beyond the page: ``include_initial`` with no CLI at all, a
backtest with another optimizer, and a package whose layers import only downwards.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, scalars, write_price_csv

from rnn_lightning import api, runs

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "python-api.md"
PACKAGE = ROOT / "rnn_lightning"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_every_python_block_of_the_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 7
    shutil.copytree(CONFIGS, tmp_path / "configs")  # the page runs from the repository root
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{PAGE.name} block {i + 1}", "exec"), namespace)
        except Exception as err:  # name the block that failed
            raise AssertionError(f"docs/python-api.md block {i + 1} failed: {err!r}\n{block}") from err
    # What the page's runs left behind, checked from the files rather than from the page's own prints.
    assert namespace["lstm"].get("model.backbone") == "lstm"  # type: ignore[attr-defined]
    run = namespace["run"]
    assert Path(run.best_checkpoint).is_file()  # type: ignore[attr-defined]
    assert (tmp_path / "lightning_logs" / "version_0" / "config.yaml").is_file()
    summary = namespace["summary"]
    assert Path(summary["run_dir"], "backtest.csv").is_file()  # type: ignore[index]
    assert (tmp_path / "kospi_gru.pt").is_file()
    result = namespace["result"]
    assert Path(result["run_dir"], "trials.csv").is_file()  # type: ignore[index]
    assert result["completed"] + result["pruned"] == 3  # type: ignore[index]
    assert isinstance(namespace["sgd_run"].trainer.optimizers[0], torch.optim.SGD)  # type: ignore[attr-defined]


def tiny_config(tmp_path: Path, config: Path, **overrides: object) -> api.RunConfig:
    """``config`` on a 90-day synthetic CSV (50 training windows, 10 validating), run folders in ``tmp_path``."""
    csv = write_price_csv(tmp_path / "prices.csv", rows=90)
    base = {
        "data.init_args.csv_path": str(csv),
        "data.init_args.split": 50,
        "data.init_args.val_size": 10,
        "trainer.default_root_dir": str(tmp_path),
    }
    return api.load_config(config, overrides=base | overrides)


def test_test_metrics_agree_with_the_predictions(tmp_path: Path) -> None:
    """api.test's RMSE and api.predict's rows of the test split: two paths, one number."""
    config = tiny_config(tmp_path, CONFIGS / "kospi_gru.yaml", **{"trainer.max_epochs": 3})
    run = api.fit(config)
    metrics = api.test(config, run.best_checkpoint)
    rows = api.predict(config, run.best_checkpoint)
    test = rows[rows["split"] == "test"]
    assert len(test) == 90 - 5 - 50
    rmse = float(((test["predicted_close"] - test["actual_close"]) ** 2).mean() ** 0.5)
    assert metrics["test_rmse"] == pytest.approx(rmse, rel=1e-5)
    naive = float(((test["naive_close"] - test["actual_close"]) ** 2).mean() ** 0.5)
    assert metrics["test_naive_rmse"] == pytest.approx(naive, rel=1e-5)


def test_include_initial_without_the_cli(tmp_path: Path) -> None:
    """The untrained model competes for "best" when the Trainer comes from the factory, not the CLI.

    With a learning rate of 1e-12 training cannot improve on the initial model (zero head: the persistence
    forecast of a diff target), so the initial checkpoint must stay the best.
    """
    config = tiny_config(
        tmp_path,
        CONFIGS / "kospi_gru_returns.yaml",
        **{
            "trainer.max_epochs": 2,
            "trainer.check_val_every_n_epoch": 1,
            "checkpoint.include_initial": True,
            "model.lr": 1e-12,
        },
    )
    run = runs.build(runs.prepare_process(config), "fit")
    assert run.trainer is not None
    runs.fit(run)
    assert run.best_checkpoint is not None and run.best_checkpoint.endswith("-initial.ckpt")
    saved = torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == 0


def test_a_backtest_trains_every_fold_with_the_given_optimizer(tmp_path: Path) -> None:
    """``--optimizer`` reaches every fold: SGD with lr 0 leaves the zero head at exactly the naive forecast."""
    config = tiny_config(
        tmp_path,
        CONFIGS / "kospi_gru_returns.yaml",
        **{"trainer.max_epochs": 2, "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}}},
    )
    summary = api.backtest(config, folds=2, test_size=5, bootstrap=0, workers=1)
    assert summary["rmse"] == pytest.approx(summary["naive_rmse"], rel=1e-9)
    # And Adam (the model's own) does move it: the optimizer was really replaced.
    adam = config.override({"optimizer": None, "model.lr": 0.05})
    moved = api.backtest(adam, folds=2, test_size=5, bootstrap=0, workers=1)
    assert moved["rmse"] != pytest.approx(moved["naive_rmse"], rel=1e-6)
    assert "backtest_rmse" in scalars(Path(summary["run_dir"]))


# --- the layers -------------------------------------------------------------------------------------------

# Lower numbers are lower layers; a module may import only from its own layer or below (docs/architecture).
LAYERS = {
    "rnn_lightning.errors": 0,
    "rnn_lightning.version": 0,
    "rnn_lightning.speedups": 1,
    "rnn_lightning.checkpointing": 1,
    "rnn_lightning.data": 2,
    "rnn_lightning.models": 2,
    "rnn_lightning.reports": 3,
    "rnn_lightning.kinds": 3,  # what each kind of data tells the workflows (asks reports and scaling)
    "rnn_lightning.callbacks": 3,
    "rnn_lightning.runs": 4,
    "rnn_lightning.workers": 4,  # forked worker processes of a backtest's folds and a search's trials
    "rnn_lightning.backtest": 5,
    "rnn_lightning.export": 5,
    "rnn_lightning.tune": 6,  # a search of backtests
    "rnn_lightning.api": 7,
    "rnn_lightning.cli": 8,
    "rnn_lightning.__main__": 9,
    "rnn_lightning": 9,  # the package's __init__: names for users, imports nothing back
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every rnn_lightning module ``path`` imports, at the top or inside functions, less TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rnn_lightning")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnn_lightning"):
            for alias in node.names:  # `from rnn_lightning import speedups` imports the submodule
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    PACKAGE.parent / sub.replace(".", "/")
                ).is_dir()
                found.add(sub if is_module else node.module)
    return found


def layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    assert best != "rnn_lightning" or module == "rnn_lightning", f"{module}: give its package a layer in LAYERS"
    return LAYERS[best]


def package_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_the_package_has_no_import_cycle() -> None:
    graph = package_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{module} ({layer(module)}) imports {target} ({layer(target)})"
        for module, targets in package_graph().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert not upward, upward


def test_no_workflow_imports_the_cli() -> None:
    graph = package_graph()
    for module, targets in graph.items():
        if module.startswith(
            ("rnn_lightning.backtest", "rnn_lightning.export", "rnn_lightning.runs", "rnn_lightning.tune")
        ):
            assert not any(t.startswith("rnn_lightning.cli") for t in targets), module


def test_the_layer_check_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: an upward import written into a module is found."""
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from rnn_lightning.cli import main\n")
    assert imports_of(fake) == {"rnn_lightning.cli.main"} or imports_of(fake) == {"rnn_lightning.cli"}
    assert layer("rnn_lightning.cli") > layer("rnn_lightning.backtest.run")
