import pytest

from tasks.variant_choice import VariantScore, choose_variant


def variant(name, kind, delta, speed, ci_low=None):
    return VariantScore(name, kind, delta, delta - 0.5 if ci_low is None else ci_low, speed)


def test_ptq_is_enough_when_it_meets_the_budget_at_the_same_speed():
    choice = choose_variant(
        [variant("PTQ max", "ptq", -0.2, 660), variant("KD-QAT", "kd_qat", +0.1, 665)], budget_points=0.3
    )
    assert choice.chosen.name == "PTQ max"
    assert "cheapest to produce" in choice.reasons[-1]


def test_kd_qat_when_ptq_misses_the_budget():
    choice = choose_variant(
        [variant("PTQ max", "ptq", -0.6, 660), variant("KD-QAT", "kd_qat", -0.1, 660)], budget_points=0.3
    )
    assert choice.chosen.name == "KD-QAT"
    assert "PTQ max: Δ -0.60 points" in choice.reasons[0] and "outside" in choice.reasons[0]


def test_mixed_precision_only_when_full_int8_misses():
    variants = [
        variant("PTQ max", "ptq", -0.9, 660),
        variant("KD-QAT", "kd_qat", -0.5, 660),
        variant("KD-QAT, 2 layers FP32", "kd_qat_mixed_precision", -0.1, 560),
    ]
    assert choose_variant(variants, 0.3).chosen.name == "KD-QAT, 2 layers FP32"
    assert choose_variant(variants, 0.6).chosen.name == "KD-QAT"


def test_a_clearly_faster_variant_wins_over_a_cheaper_one():
    variants = [variant("PTQ max", "ptq", -0.1, 660), variant("3-layer student", "smaller_student", -0.2, 1200)]
    assert choose_variant(variants, 0.3).chosen.name == "3-layer student"


def test_nothing_meets_the_budget():
    choice = choose_variant([variant("PTQ max", "ptq", -2.0, 660)], 0.3)
    assert choice.chosen is None
    assert "no variant meets the budget" in choice.reasons[-1]


def test_strict_rule_uses_the_interval():
    candidates = [variant("PTQ max", "ptq", -0.1, 660, ci_low=-0.7), variant("KD-QAT", "kd_qat", 0.0, 660, ci_low=-0.2)]
    assert choose_variant(candidates, 0.3).chosen.name == "PTQ max"
    assert choose_variant(candidates, 0.3, require_ci=True).chosen.name == "KD-QAT"


def test_budget_must_not_be_negative():
    with pytest.raises(ValueError, match="budget_points"):
        choose_variant([], -1.0)


def test_a_variant_whose_interval_reaches_past_the_gate_is_not_chosen():
    """debian-sections, 2026-12-07 (BENCHMARKS.md section 6): eval Δ and interval of each candidate as
    measured; the 3-layer student was +0.24 on eval, [-1.13, +1.66], and -1.58 on test (gate: 1.0)."""
    candidates = [
        variant("PTQ max", "ptq", +0.12, 1.0, ci_low=-0.65),
        variant("PTQ percentile:99.99", "ptq", +0.41, 1.0, ci_low=-0.12),
        variant("PTQ entropy", "ptq", +0.12, 1.0, ci_low=-0.59),
        variant("KD-QAT student (calibrated only)", "kd_qat", +0.41, 1.0, ci_low=-0.12),
        variant("smaller student (3 layers, KD-QAT)", "smaller_student", +0.24, 2.0, ci_low=-1.13),
        variant("KD-QAT, 1 group(s) in FP32", "kd_qat_mixed_precision", +0.41, 0.86, ci_low=-0.18),
    ]
    assert choose_variant(candidates, 0.3).chosen.name == "smaller student (3 layers, KD-QAT)"
    choice = choose_variant(candidates, 0.3, ci_floor_points=1.0)
    assert choice.chosen.name == "PTQ percentile:99.99"  # cheapest at full speed, then the most accurate
    assert "reaches -1.13, below the -1.00-point floor" in choice.reasons[4]
    # the demo's 3-layer student (+0.25, [-0.58, +1.08]) stays eligible under the same floor
    demo = [
        variant("PTQ entropy", "ptq", -0.25, 1.0, ci_low=-0.83),
        variant("3 layers", "smaller_student", 0.25, 2.0, ci_low=-0.58),
    ]
    assert choose_variant(demo, 0.3, ci_floor_points=1.0).chosen.name == "3 layers"
    with pytest.raises(ValueError, match="ci_floor_points"):
        choose_variant(candidates, 0.3, ci_floor_points=-1.0)
