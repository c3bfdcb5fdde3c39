import numpy as np
import pytest

from tasks.config import ValidateConfig
from tasks.validate import accuracy_gate, mcnemar_exact_p, measure_speed, min_accuracy_gate, paired_comparison


def test_paired_comparison_counts_flips_and_delta():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    reference = labels.copy()
    reference[[0, 1]] = [1, 0]  # teacher wrong on rows 0, 1
    candidate = labels.copy()
    candidate[[5, 6, 7]] = [0, 1, 0]  # candidate wrong on rows 5, 6, 7, right on 0, 1
    result = paired_comparison(candidate, reference, labels, samples=500)
    assert result.fixed == 2 and result.broken == 3
    assert result.delta_points == pytest.approx(-10.0)
    assert result.agreement == pytest.approx(0.5)
    assert result.ci_low_points <= result.delta_points <= result.ci_high_points


def test_identical_predictions_have_zero_delta_and_full_agreement():
    labels = np.arange(100) % 4
    predictions = (labels + (np.arange(100) % 7 == 0)) % 4
    result = paired_comparison(predictions, predictions, labels, samples=200)
    assert result.delta_points == 0 and result.ci_low_points == 0 and result.ci_high_points == 0
    assert result.agreement == 1.0 and result.mcnemar_p == 1.0


def test_mcnemar_exact_values():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)  # two-sided exact binomial
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * 11 / 1024)


@pytest.mark.parametrize(
    ("teacher", "engine", "max_drop", "passed"),
    [
        (0.90, 0.90, 1.0, True),
        (0.90, 0.891, 1.0, True),
        (0.90, 0.889, 1.0, False),
        (0.90, 0.95, 0.0, True),
        (0.90, 0.8999, 0.0, False),
    ],
)
def test_accuracy_gate(teacher, engine, max_drop, passed):
    decision = accuracy_gate(teacher, engine, max_drop)
    assert decision.passed is passed
    assert "drop" in decision.detail


def test_measure_speed_orders_a_slow_and_a_fast_function():
    import time

    batches = [np.zeros((1, 4))]
    config = ValidateConfig(timing_iterations=5, warmup_iterations=0)
    slow = measure_speed("slow", lambda _: time.sleep(0.004), batches, [np.zeros((32, 4))], config)
    fast = measure_speed("fast", lambda _: None, batches, [np.zeros((32, 4))], config)
    assert slow.latency_p50_ms > fast.latency_p50_ms
    assert slow.latency_p99_ms >= slow.latency_p50_ms >= 3.0
    assert fast.throughput_rows_per_s > slow.throughput_rows_per_s


def test_min_accuracy_gate():
    assert min_accuracy_gate(0.5, 0.5).passed
    assert not min_accuracy_gate(0.4999, 0.5).passed


def test_each_added_gate_decides_on_its_threshold():
    import numpy as np

    from tasks.validate import ChampionScore, agreement_gate, champion_gate, latency_gate, speedup_gate

    engine = np.array([0, 1, 2, 1] * 50)
    student = engine.copy()
    assert agreement_gate(engine, student, 0.995).passed
    student[0] = 2  # one row of 200 differs: 99.5% agreement
    assert agreement_gate(engine, student, 0.995).passed
    student[1] = 2
    decision = agreement_gate(engine, student, 0.995)
    assert not decision.passed and "99.00%" in decision.detail and "2 of 200 rows differ" in decision.detail

    assert speedup_gate(1.5, 1.2).passed and not speedup_gate(0.9, 1.0).passed
    assert "×0.90" in speedup_gate(0.9, 1.0).detail and speedup_gate(0.5, 0.0).passed  # 0 disables

    assert latency_gate(3.0, 5.0).passed and not latency_gate(6.0, 5.0).passed and latency_gate(99.0, None).passed

    assert champion_gate(0.80, None, 0.0).passed  # no champion yet
    assert champion_gate(0.80, ChampionScore("3", 0.90), None).passed  # gate off
    assert champion_gate(0.90, ChampionScore("3", 0.90), 0.0).passed
    worse = champion_gate(0.895, ChampionScore("3", 0.90), 0.0)
    assert not worse.passed and "champion 3" in worse.detail and "-0.50 points" in worse.detail
    assert champion_gate(0.895, ChampionScore("3", 0.90), 0.5).passed
    # A champion that cannot be scored fails the gate (closed), unless explicitly overridden.
    unscored = ChampionScore("4", None, "it predicts a different label set")
    closed = champion_gate(0.99, unscored, 0.0)
    assert not closed.passed and "could not be scored" in closed.detail and "allow_unscored_champion" in closed.detail
    overridden = champion_gate(0.5, unscored, 0.0, allow_unscored=True)
    assert overridden.passed and "only because validate.allow_unscored_champion is true" in overridden.detail
