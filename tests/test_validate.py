import numpy as np
import pytest

from enginekit.config import ValidateConfig
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
