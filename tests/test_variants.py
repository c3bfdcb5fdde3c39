"""The variants stage on a real tiny build: every PTQ method and the KD-QAT student become engines,
are scored on eval against the teacher, and one is chosen by the budget rule."""

import json

from tasks.quantize import load_student
from tasks.variants import choose_int8_variant


def test_every_candidate_is_scored_and_one_is_chosen(tiny_build, tmp_path):
    config = tiny_build.config.quantize.model_copy(update={"ptq_baselines": ["max", "percentile:99.9", "entropy"]})
    choice = choose_int8_variant(
        config, tiny_build.teacher, tiny_build.student, tiny_build.data, tmp_path, lambda _: None
    )
    names = [candidate.name for candidate in choice.candidates]
    assert names[:3] == ["PTQ max", "PTQ percentile:99.9", "PTQ entropy"]
    assert names[3].startswith("KD-QAT student")
    assert choice.chosen in choice.candidates
    within = [c for c in choice.candidates if c.delta_points >= -config.accuracy_budget_points]
    if within:  # the rule: calibration-only first among equally fast candidates within budget
        assert choice.chosen.kind == ("ptq" if any(c.kind == "ptq" for c in within) else within[0].kind)
    assert choice.reasons[-1].startswith(("chosen:", "shipping the most accurate"))
    saved = json.loads((tmp_path / "variants.json").read_text())
    assert len(saved["candidates"]) == 4
    load_student(choice.candidates[1].student, tiny_build.teacher)  # every PTQ variant restores for export
    assert "| PTQ entropy | ptq |" in (tmp_path / "variants.md").read_text()
