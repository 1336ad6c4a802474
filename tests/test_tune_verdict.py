"""The verdict after a search: SPA and StepM against arch built by hand, the detectable ratio against its
closed form under normal moves, and the printed paragraph's wording following its numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import SPA
from scipy import optimize, stats

from rnn_lightning.backtest.stats import diebold_mariano
from rnn_lightning.errors import UserInputError
from rnn_lightning.tune.summary import Verdict
from rnn_lightning.tune.verdict import (
    BootstrapSettings,
    _dm_pvalues_model_better,
    detectable_ratio,
    spa_test,
    stepm,
)

DAYS = 500
NAMES = [f"trial_{k}" for k in range(5)]


def losses(better: bool, seed: int = 7) -> tuple[np.ndarray, pd.DataFrame]:
    """Squared errors of unit-variance normal errors: the naive forecast and five independent trials.

    With ``better``, trial_2's errors have standard deviation 0.7 (RMSE ratio 0.7); the others' losses are
    distributed as the naive forecast's.
    """
    rng = np.random.default_rng(seed)
    naive = rng.standard_normal(DAYS) ** 2
    scale = {name: 0.7 if better and name == "trial_2" else 1.0 for name in NAMES}
    frame = pd.DataFrame({name: (scale[name] * rng.standard_normal(DAYS)) ** 2 for name in NAMES})
    return naive, frame


def arch_pvalues(naive: np.ndarray, frame: pd.DataFrame, seed: int) -> pd.Series:
    spa = SPA(naive, frame, block_size=round(DAYS ** (1 / 3)), reps=1000, bootstrap="stationary", seed=seed)
    spa.compute()
    return spa.pvalues


def test_spa_and_stepm_find_the_one_better_trial() -> None:
    naive, frame = losses(better=True)
    settings = BootstrapSettings()
    result = spa_test(naive, frame, settings)
    assert result["spa_pvalue"] < 0.05
    assert result["spa_pvalue_lower"] <= result["spa_pvalue"] <= result["spa_pvalue_upper"]
    assert stepm(naive, frame, settings) == ["trial_2"]
    # arch's sign: it tests naive - model > 0, so the same trial made worse is found by nobody
    assert stepm(naive, frame.assign(trial_2=frame["trial_2"] / 0.49), settings) == []


def test_spa_and_stepm_find_nothing_among_equals() -> None:
    naive, frame = losses(better=False)
    settings = BootstrapSettings()
    assert spa_test(naive, frame, settings)["spa_pvalue"] > 0.1
    assert stepm(naive, frame, settings) == []


@pytest.mark.parametrize("better", [True, False])
def test_spa_passes_its_settings_to_arch(better: bool) -> None:
    naive, frame = losses(better)
    for seed in (0, 1):
        got = spa_test(naive, frame, BootstrapSettings(seed=seed))
        want = arch_pvalues(naive, frame, seed)
        assert got == {
            "spa_pvalue": want["consistent"],
            "spa_pvalue_lower": want["lower"],
            "spa_pvalue_upper": want["upper"],
        }
    if not better:  # p-values away from 0: another seed's draws move them, a little
        first, second = (spa_test(naive, frame, BootstrapSettings(seed=s))["spa_pvalue"] for s in (0, 1))
        assert first != second and abs(first - second) < 0.1


def test_spa_guards() -> None:
    naive, frame = losses(better=False)
    with pytest.raises(ValueError, match="no completed trials"):
        spa_test(naive, frame.iloc[:, :0], BootstrapSettings())
    with pytest.raises(ValueError, match="too few"):
        stepm(naive[:5], frame.iloc[:5], BootstrapSettings())
    with pytest.raises(UserInputError, match="unknown bootstrap"):
        BootstrapSettings(bootstrap="iid")
    assert BootstrapSettings().as_dict(600)["block_size_resolved"] == 8
    assert BootstrapSettings(block_size=3).as_dict(600)["block_size_resolved"] == 3


def test_vectorised_dm_equals_diebold_mariano() -> None:
    rng = np.random.default_rng(3)
    model, benchmark = rng.standard_normal((2, 4, 50)) ** 2
    model[0] *= 0.5
    got = _dm_pvalues_model_better(model, benchmark)
    want = [diebold_mariano(m, b)["pvalue_model_better"] for m, b in zip(model, benchmark, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def analytic_ratio(days: int, power: float = 0.8, level: float = 0.05) -> float:
    """The RMSE ratio detected with ``power`` under normal innovations, by a normal approximation.

    With ``r_t = phi r_{t-1} + s u_t``, ``s^2 = 1 - phi^2``, ``u_t ~ N(0, 1)`` (so ``r_t ~ N(0, 1)``), the loss
    differential is ``d_t = r_t^2 - s^2 u_t^2 = phi^2 r_{t-1}^2 + 2 phi s r_{t-1} u_t``. Its mean is
    ``phi^2``; its variance ``g_0 = 2 phi^4 + 4 phi^2 s^2 = 2 phi^2 (2 - phi^2)`` (the two terms are
    uncorrelated); its lag-k autocovariance ``2 phi^{4 + 2k} + 4 phi^{2 + 2k} s^2 = g_0 phi^{2k}``
    (``cov(r^2_{t-1}, r^2_{t+k-1}) = 2 phi^{2k}``, and ``r_{t+k-1}`` holds ``phi^{k-1} s u_t``), so the
    long-run variance is ``g_0 (1 + phi^2) / (1 - phi^2)``. The HLN statistic ``sqrt(n - 1) mean(d) /
    sqrt(g_0)`` is then about normal with mean ``sqrt(n - 1) phi / sqrt(2 (2 - phi^2))`` and variance
    ``(1 + phi^2) / (1 - phi^2)``; power = ``Phi((mean - t_{n-1, 1-level}) / sd)``.
    """

    def shortfall(rho: float) -> float:
        phi2 = 1.0 - rho**2
        mean = math.sqrt(days - 1) * math.sqrt(phi2) / math.sqrt(2.0 * (2.0 - phi2))
        sd = math.sqrt((1.0 + phi2) / (1.0 - phi2))
        return float(stats.norm.cdf((mean - stats.t.isf(level, days - 1)) / sd)) - power

    return float(optimize.brentq(shortfall, 0.5, 0.9999))


def test_detectable_ratio_matches_the_closed_form() -> None:
    errors = np.random.default_rng(11).standard_normal(600)
    settings = BootstrapSettings(seed=5)
    simulated = detectable_ratio(errors, settings)
    # the grid's step is 0.005: the closed form lies just above the last grid point detected
    assert abs(simulated - analytic_ratio(600)) <= 0.01
    assert detectable_ratio(errors, settings) == simulated  # seeded


def test_more_days_detect_smaller_edges() -> None:
    rng = np.random.default_rng(12)
    short = detectable_ratio(rng.standard_normal(200), BootstrapSettings())
    long = detectable_ratio(rng.standard_normal(2000), BootstrapSettings())
    assert short < long
    assert abs(short - analytic_ratio(200)) <= 0.02 and abs(long - analytic_ratio(2000)) <= 0.01
    # none of the grid detectable on 12 days: NaN
    assert math.isnan(detectable_ratio(rng.standard_normal(12), BootstrapSettings(), grid=[0.95, 0.99]))


def verdict_paragraph(summary: dict) -> str:
    """The paragraph of a verdict read back from summary.json's keys."""
    return Verdict.from_summary(summary).paragraph()


SUMMARY = {
    "completed": 30,
    "best_score": 0.9941,
    "best_dm_pvalue": 0.031,
    "spa_pvalue": 0.41,
    "stepm_superior": [],
    "holdout_days": 250,
    "holdout_rmse_ratio": 1.0043,
    "holdout_dm_pvalue": 0.71,
    "tuning_days": 600,
    "detectable_ratio": 0.97,
    "pruned": 0,
    "failed": 0,
}


def test_verdict_paragraph_without_a_winner() -> None:
    text = verdict_paragraph(SUMMARY)
    assert text == (
        "Best of 30 completed trials: RMSE ratio 0.994 over the tuning folds (DM p = 0.031 on its own). "
        "Accounting for 30 trials, SPA p = 0.41: no configuration beats the naive forecast. "
        "On the 250 held-out days the chosen configuration's ratio is 1.004 (DM p = 0.71). "
        "These 600 tuning days would detect a ratio of 0.970 or lower."
    )


def test_verdict_paragraph_with_winners_and_no_holdout() -> None:
    summary = SUMMARY | {
        "spa_pvalue": 0.0,
        "stepm_superior": ["7", "19"],
        "pruned": 4,
        "failed": 1,
        "holdout_days": None,
        "holdout_rmse_ratio": None,
        "holdout_dm_pvalue": None,
        "detectable_ratio": math.nan,
    }
    text = verdict_paragraph(summary)
    assert "(4 trials pruned and 1 trial failed left out)" in text
    assert "SPA p < 0.001: at least one configuration beats the naive forecast (StepM: trials 7, 19)." in text
    assert "no configuration" not in text and "held-out days" not in text
    assert "No days were held out" in text and "too few to detect" in text
    assert "SPA p = 0.049: at least one" in verdict_paragraph(summary | {"spa_pvalue": 0.049})
    assert "SPA p = 0.05: no configuration" in verdict_paragraph(summary | {"spa_pvalue": 0.05})


def test_verdict_paragraph_without_prices() -> None:
    summary = {"completed": 3, "objective": "val_loss", "best_score": 0.25, "best_dm_pvalue": None}
    text = verdict_paragraph(summary | {"spa_pvalue": None, "stepm_superior": [], "detectable_ratio": None})
    assert text == "Best of 3 completed trials: val_loss 0.250 on the validation split."


def test_trials_that_copy_the_naive_forecast_beat_nothing() -> None:
    """A zero-initialised head that never moved forecasts the naive forecast exactly: it cannot beat it.

    arch alone would give p = 0 for such copies (a bootstrap of zero differentials); here they are left out.
    """
    rng = np.random.default_rng(3)
    naive = rng.chisquare(1, 120)
    copies = pd.DataFrame({"trial_0": naive.copy(), "trial_1": naive.copy()})
    settings = BootstrapSettings(reps=200)
    assert spa_test(naive, copies, settings)["spa_pvalue"] == 1.0
    assert stepm(naive, copies, settings) == []
    # With one real trial beside the copies, the verdict is that trial's alone.
    real = naive * rng.uniform(0.6, 1.6, 120)
    both = copies.assign(trial_2=real)
    alone = pd.DataFrame({"trial_2": real})
    assert spa_test(naive, both, settings) == spa_test(naive, alone, settings)


def test_stepm_when_every_trial_is_better() -> None:
    """arch's StepM fails once its steps have found every trial better; the answer is then all of them."""
    rng = np.random.default_rng(4)
    naive = rng.chisquare(1, 200) + 0.5
    losses = pd.DataFrame({"trial_0": naive * 0.3, "trial_1": naive * 0.6})
    assert stepm(naive, losses, BootstrapSettings(reps=200)) == ["trial_0", "trial_1"]
