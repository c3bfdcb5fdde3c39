"""The variants stages on a real tiny build: every PTQ method, the KD-QAT student (started from the best
baseline), the smaller student and the mixed-precision student become engines, are scored on eval
against the teacher, and one is chosen by the budget rule."""

import json
from dataclasses import replace

import pytest

from tasks.quantize import load_student, quantized_layer_names, train_student
from tasks.variants import choose_int8_variant, measure_ptq_baselines, mixed_precision_student


@pytest.fixture(scope="module")
def ptq(tiny_build, tmp_path_factory):
    config = tiny_build.config.quantize.model_copy(update={"ptq_baselines": ["max", "percentile:99.9", "entropy"]})
    return config, measure_ptq_baselines(config, tiny_build.teacher, tiny_build.data, tmp_path_factory.mktemp("ptq"))


def test_ptq_baselines_are_scored_and_the_best_starts_kd_qat(ptq, tiny_build, tmp_path):
    config, baselines = ptq
    assert [c.name for c in baselines.candidates] == ["PTQ max", "PTQ percentile:99.9", "PTQ entropy"]
    best = max(c.eval_accuracy for c in baselines.candidates)
    assert baselines.qat_init.eval_accuracy == best
    assert all(c.rows_per_second > 0 and 0 <= c.agreement <= 1 for c in baselines.candidates)
    student = train_student(
        config, tiny_build.teacher, tiny_build.data, tmp_path / "kd", lambda _: None, init=baselines.qat_init.student
    )
    assert student.calibration == baselines.qat_init.student.calibration
    # QAT keeps the calibrated start unless an epoch beats it on eval: never below the best PTQ (fake-quant).
    assert student.qat_eval_accuracy >= student.ptq_eval_accuracy


def test_an_explicit_calibration_method_is_measured_and_used(tiny_build, tmp_path):
    config = tiny_build.config.quantize.model_copy(
        update={"ptq_baselines": ["max"], "calibration_method": "percentile", "calibration_percentile": 99.5}
    )
    baselines = measure_ptq_baselines(config, tiny_build.teacher, tiny_build.data, tmp_path)
    assert [c.name for c in baselines.candidates] == ["PTQ max", "PTQ percentile:99.5"]
    assert baselines.qat_init.name == "PTQ percentile:99.5"


def test_every_candidate_is_scored_and_one_is_chosen(ptq, tiny_build, tmp_path):
    config, baselines = ptq
    config = config.model_copy(update={"sensitivity": config.sensitivity.model_copy(update={"keep_most_sensitive": 1})})
    smaller = train_student(
        config, tiny_build.teacher, tiny_build.data, tmp_path / "small", lambda _: None, student_layers=[0]
    )
    choice = choose_int8_variant(
        config, tiny_build.teacher, baselines, tiny_build.student, smaller, tiny_build.data, tmp_path, lambda _: None
    )
    names = [candidate.name for candidate in choice.candidates]
    assert names[:3] == ["PTQ max", "PTQ percentile:99.9", "PTQ entropy"]
    assert names[3].startswith("KD-QAT student")
    assert names[4] == "smaller student (1 layer, KD-QAT)" and choice.candidates[4].speed_proxy == 2.0
    assert len(choice.sensitivity) == 2  # block granularity: one group per encoder layer
    mixed = [c for c in choice.candidates if c.kind == "kd_qat_mixed_precision"]
    if any(s.gain_points > 0 for s in choice.sensitivity):
        assert len(mixed) == 1 and mixed[0].speed_proxy < 1.0
        assert mixed[0].student.unquantized_groups == [choice.sensitivity[0].layer]
    else:
        assert not mixed
    assert choice.chosen in choice.candidates
    # The rule itself (budget, interval floor, ties) is tested in test_variant_choice.py; here: what ships.
    eligible = [
        c
        for c in choice.candidates
        if any(r.startswith(f"{c.name}: ") and "— within" in r and ", but" not in r for r in choice.reasons)
    ]
    if eligible:  # the fastest eligible one (or one tied with it) ships
        assert (
            choice.chosen in eligible
            and choice.chosen.speed_proxy >= 0.97 * max(c.speed_proxy for c in eligible) - 1e-9
        )
        assert choice.reasons[-1].startswith("chosen:"), choice.reasons
    else:  # none eligible: the most accurate ships, and the reasons say so
        assert choice.chosen.eval_accuracy == max(c.eval_accuracy for c in choice.candidates)
        assert choice.reasons[-1].startswith("shipping the most accurate"), choice.reasons
    saved = json.loads((tmp_path / "variants.json").read_text())
    assert len(saved["candidates"]) == len(choice.candidates) and saved["chosen"] == choice.chosen.name
    report = (tmp_path / "variants.md").read_text()
    assert "| PTQ entropy | ptq |" in report and "| FP32 teacher (PyTorch) | reference |" in report
    assert "## Sensitivity of the KD-QAT student" in report
    metrics = choice.metrics()
    assert metrics["variant.ptq_entropy.eval_accuracy"] == choice.candidates[2].eval_accuracy
    assert metrics["variant.teacher_fp32.eval_accuracy"] == baselines.reference.accuracy


def test_mixed_precision_student_keeps_the_most_sensitive_group_in_float(tiny_build, tmp_path):
    from tasks.quantize import LayerSensitivity

    sensitivity = [
        LayerSensitivity("bert.encoder.layer.1", 0.9, 2.0),
        LayerSensitivity("bert.encoder.layer.0", 0.8, -1.0),
    ]
    mixed = mixed_precision_student(tiny_build.student, sensitivity, 2, tiny_build.teacher, "block", tmp_path)
    assert mixed is not None and mixed.unquantized_groups == ["bert.encoder.layer.1"]  # only positive gains
    restored = load_student(mixed, tiny_build.teacher)  # the disabled quantizers survive save/restore
    names = quantized_layer_names(restored)
    assert len(names) == 12 and not any(n.startswith("bert.encoder.layer.1.") for n in names)
    assert (
        mixed_precision_student(tiny_build.student, sensitivity[1:], 2, tiny_build.teacher, "block", tmp_path) is None
    )
    assert replace(mixed, unquantized_groups=[]).quantized_layers == 12
