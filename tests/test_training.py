"""The training loop's schedule and stopping rules: train until eval stops improving, not for a fixed count."""

from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_config_mapping, write_intent_dataset


def test_schedule_warms_up_holds_then_decays_to_zero():
    from tasks.training import LearningRateSchedule

    schedule = LearningRateSchedule(peak=1.0, warmup_steps=4)
    assert [schedule.rate(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule.rate(1000) == 1.0  # no end is planned: the rate holds until a plateau starts the decay
    schedule.decay_start, schedule.decay_steps = 10, 5
    assert [schedule.rate(step) for step in range(10, 16)] == [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    assert not schedule.decay_done(14) and schedule.decay_done(15)
    early = LearningRateSchedule(peak=1.0, warmup_steps=10, decay_start=2, decay_steps=4)
    assert early.rate(2) == pytest.approx(0.3)  # a decay during warmup never raises the rate
    assert early.rate(3) == pytest.approx(0.4) and early.rate(5) == pytest.approx(0.25) and early.rate(6) == 0.0


def test_a_reduced_schedule_holds_the_lower_rate_and_decays_from_it():
    from tasks.training import LearningRateSchedule

    schedule = LearningRateSchedule(peak=1.0, warmup_steps=2, scale=0.5)
    assert [schedule.rate(step) for step in (0, 1, 100)] == [0.25, 0.5, 0.5]
    schedule.decay_start, schedule.decay_steps = 10, 4
    assert [schedule.rate(step) for step in range(10, 15)] == [0.5, 0.375, 0.25, 0.125, 0.0]


def test_a_falling_schedule_anneals_per_step_and_decays_from_the_level_reached():
    from tasks.training import LearningRateSchedule

    schedule = LearningRateSchedule(peak=1.0, warmup_steps=2, per_step=0.5)
    assert [schedule.rate(step) for step in range(5)] == [0.5, 1.0, 1.0, 0.5, 0.25]  # falls after warmup
    schedule.decay_start, schedule.decay_steps = 4, 2
    assert [schedule.rate(step) for step in range(4, 8)] == [0.25, 0.125, 0.0, 0.0]


def test_an_annealing_plan_is_extended_while_eval_improves_and_the_rate_never_jumps():
    from tasks.config import TrainingConfig
    from tasks.training import LearningRateSchedule, _anneal_decision

    config = TrainingConfig(schedule="anneal", epochs=10, horizon_epochs=4, early_stopping_patience=2)
    schedule = LearningRateSchedule(peak=1.0, warmup_steps=0, decay_start=0, decay_steps=40)  # 4 epochs x 10 steps
    extensions: list[str] = []
    # Epoch 2 of 4, gain at epoch 2: within patience of the end and improving, so the plan grows by half.
    before = schedule.rate(20)
    quiet = lambda _: None  # noqa: E731
    horizon, after, stop = _anneal_decision(config, schedule, 20, 2, (4, 0), 10, 10, (0.9, 2), extensions, quiet)
    assert (horizon, after, stop) == (6, 2, None) and extensions == ["after epoch 2: 4 to 6 epochs"]
    assert schedule.rate(20) == pytest.approx(before) and schedule.rate(60) == 0.0  # continuous, zero at the new end
    assert schedule.rate(40) == pytest.approx(before / 2)  # falls more slowly than the old plan (zero at step 40)
    # Epoch 3: no gain yet, but the extension has had one epoch only; epoch 4: two epochs without a gain
    # since the extension and the gain, so the bet is off: a plateau, before the extended plan's end.
    assert _anneal_decision(config, schedule, 30, 3, (6, 2), 10, 10, (0.9, 2), extensions, quiet) == (6, 2, None)
    horizon, after, stop = _anneal_decision(config, schedule, 40, 4, (6, 2), 10, 10, (0.9, 2), extensions, quiet)
    assert stop is not None and stop[0] == "plateau" and "since the plan was extended" in stop[1]
    assert "after epoch 4 of 6 planned" in stop[1] and "4 to 6" in stop[1]
    # A gain after the extension keeps it going: patience counts from the later of the two.
    assert _anneal_decision(config, schedule, 40, 4, (6, 2), 10, 10, (0.92, 3), extensions, quiet)[2] is None
    # A plan never extended runs to its end however flat eval is, then stops there with the rate at zero.
    flat = LearningRateSchedule(peak=1.0, warmup_steps=0, decay_start=0, decay_steps=40)
    assert _anneal_decision(config, flat, 30, 3, (4, 0), 10, 10, (0.9, 1), [], quiet) == (4, 0, None)
    horizon, after, stop = _anneal_decision(config, flat, 40, 4, (4, 0), 10, 10, (0.9, 1), [], quiet)
    assert stop is not None and stop[0] == "plateau" and "was not extended" in stop[1]
    # Still improving at the ceiling: the warning case.
    horizon, after, stop = _anneal_decision(config, schedule, 100, 10, (10, 7), 10, 10, (0.95, 10), [], quiet)
    assert stop is not None and stop[0] == "ceiling"


def test_linear_schedule_matches_the_classic_warmup_then_linear_decay():
    import torch
    from transformers import get_linear_schedule_with_warmup

    from tasks.training import LearningRateSchedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_linear_schedule_with_warmup(optimizer, 10, 100)
    ours = LearningRateSchedule(peak=1.0, warmup_steps=10, decay_start=10, decay_steps=90)
    for step in range(10, 100):  # after warmup (ours reaches the peak one step earlier)
        assert ours.rate(step) == pytest.approx(reference.lr_lambdas[0](step))


def test_plateau_schedule_needs_patience_and_a_ceiling_above_the_decay():
    from pydantic import ValidationError

    from tasks.config import TrainingConfig

    with pytest.raises(ValidationError, match="needs early_stopping_patience"):
        TrainingConfig(early_stopping_patience=None)
    with pytest.raises(ValidationError, match="decay_epochs"):
        TrainingConfig(schedule="plateau", epochs=2, decay_epochs=2)
    assert TrainingConfig(schedule="linear", early_stopping_patience=None).epochs == 20


def test_a_partial_training_section_keeps_its_stages_own_defaults(tmp_path):
    """Setting one KD-QAT key must not turn KD-QAT into the teacher's 20-epoch annealing recipe, nor one
    distillation key drop the rest of the smaller student's recipe."""
    from tasks.config import config_from_mapping

    mapping = {"model_name": "m", "publish": {"store": {"bucket": "bucket"}}}
    mapping["quantize"] = {"training": {"learning_rate": 1e-5}}
    mapping["quantize"]["smaller_student"] = {"distill_training": {"epochs": 6}}
    mapping["teacher"] = {"training": {"epochs": 7}}
    config = config_from_mapping(mapping, "partial")
    assert config.quantize.training.learning_rate == 1e-5
    assert config.quantize.training.schedule == "linear" and config.quantize.training.epochs == 2
    assert config.teacher.training.epochs == 7 and config.teacher.training.schedule == "anneal"
    assert config.teacher.training.learning_rate == 2e-4
    distill = config.quantize.smaller_student.distill_training
    assert (distill.epochs, distill.schedule, distill.learning_rate) == (6, "anneal", 2e-4)


@pytest.fixture(scope="module")
def tiny_teacher_setup(tmp_path_factory):
    from tasks.config import config_from_mapping
    from tasks.data import prepare_data

    root = tmp_path_factory.mktemp("plateau")
    mapping = tiny_config_mapping(write_intent_dataset(root / "source"), root)
    config = config_from_mapping(mapping, "plateau test config")
    return root, config, prepare_data(config.data, root / "data")


def _last_gain(curve: list[float], min_delta: float = 0.001) -> int:
    """The plateau rule read off a curve: the last epoch that beat the previous gain by more than min_delta."""
    reference, last_gain = -1.0, 0
    for epoch, value in enumerate(curve, 1):
        if value > reference + min_delta:
            reference, last_gain = value, epoch
    return last_gain


def _teacher_config(config, **training):
    # A learning rate at which the tiny random BERT needs several epochs to learn the intents.
    # The plateau recipe unless a test names another schedule (the default, anneal, has its own test).
    settings = {"epochs": 20, "min_steps": 0, "batch_size": 16, "learning_rate": 5e-4, "early_stopping_patience": 3}
    settings["schedule"] = "plateau"
    return config.teacher.model_copy(
        update={"training": config.teacher.training.model_copy(update={**settings, **training})}
    )


def test_a_plateau_teacher_still_improving_trains_past_the_old_epoch_count_and_stops_on_the_plateau(
    tiny_teacher_setup,
):
    from tasks.teacher import train_teacher

    root, config, data = tiny_teacher_setup
    messages: list[str] = []
    teacher = train_teacher(_teacher_config(config), data, root / "teacher", log=messages.append)
    curve = [record["eval_accuracy"] for record in teacher.history]
    assert teacher.stop_reason == "plateau", teacher.stop_detail
    assert teacher.best_epoch > 3 and max(curve[:3]) < teacher.eval_accuracy, curve  # improving after epoch 3
    # The plateau rule, read off the curve: the last improvement, then `patience` epochs without one, then
    # one decay epoch (decay_epochs), then stop; the rate of the last epoch is near zero.
    last_gain = _last_gain(curve)
    assert len(curve) == last_gain + 3 + 1 < 20
    assert [r["phase"] for r in teacher.history][-1] == "decay" and teacher.history[-1]["learning_rate"] < 1e-4
    assert teacher.history[0]["learning_rate"] == pytest.approx(5e-4)  # constant after warmup while improving
    assert not teacher.warnings
    report = teacher.report_path.read_text()
    assert "Stopped: **plateau**" in report and f"after epoch {last_gain}" in report
    assert f"| {teacher.best_epoch} (kept) |" in report
    assert any(m.startswith("stopped (plateau)") for m in messages)


def test_a_plateau_that_cuts_the_rate_trains_on_at_the_lower_rate_until_the_next_plateau(tiny_teacher_setup):
    from tasks.teacher import train_teacher

    root, config, data = tiny_teacher_setup
    teacher_config = _teacher_config(config, plateau_reductions=1, reduction_factor=0.3, early_stopping_patience=2)
    teacher = train_teacher(teacher_config, data, root / "reduced", log=lambda _: None)
    assert teacher.stop_reason == "plateau", teacher.stop_detail
    phases = [r["phase"] for r in teacher.history]
    curve = [r["eval_accuracy"] for r in teacher.history]
    # Read the rule off the curve: stable until the first plateau (patience epochs after the last gain),
    # then the reduced rate with the patience counted afresh, then one decay epoch after the second plateau.
    reference, last_gain, first_plateau = -1.0, 0, 0
    for epoch, value in enumerate(curve, 1):
        if value > reference + 0.001:
            reference, last_gain = value, epoch
        elif not first_plateau and epoch - last_gain >= 2:
            first_plateau = epoch
    assert first_plateau, curve
    assert phases[:first_plateau] == ["stable"] * first_plateau
    reduced = phases[first_plateau:-1]
    assert len(reduced) >= 2 and set(reduced) == {"reduced"} and phases[-1] == "decay", phases
    assert len(curve) == max(first_plateau, last_gain) + 2 + 1
    held = [r["learning_rate"] for r in teacher.history if r["phase"] == "reduced"]
    assert held == pytest.approx([0.3 * 5e-4] * len(held))
    assert f"after epoch {first_plateau} the rate was cut to 0.00015" in teacher.stop_detail


def test_a_falling_rate_stops_at_the_plateau_without_a_decay_epoch(tiny_teacher_setup):
    from tasks.teacher import train_teacher

    root, config, data = tiny_teacher_setup
    teacher_config = _teacher_config(config, rate_decay_per_epoch=0.7, decay_epochs=0, early_stopping_patience=2)
    teacher = train_teacher(teacher_config, data, root / "falling", log=lambda _: None)
    assert teacher.stop_reason == "plateau", teacher.stop_detail
    curve = [r["eval_accuracy"] for r in teacher.history]
    last_gain = _last_gain(curve)
    assert len(curve) == last_gain + 2  # stopped at the plateau: no decay epoch
    assert {r["phase"] for r in teacher.history} == {"falling"}
    rates = [r["learning_rate"] for r in teacher.history]
    assert rates[1:] == pytest.approx([rate * 0.7 for rate in rates[:-1]], rel=1e-6)  # x0.7 per epoch
    assert teacher.stop_detail.endswith(f"training stopped after epoch {len(curve)}")


def test_the_default_annealing_teacher_still_improving_trains_past_its_plan_and_stops_on_the_plateau(
    tiny_teacher_setup,
):
    from tasks.config import TrainingConfig
    from tasks.teacher import train_teacher

    assert TrainingConfig().schedule == "anneal"  # the default recipe; a first plan of 3 = the old epoch count
    root, config, data = tiny_teacher_setup
    teacher_config = _teacher_config(config, schedule="anneal", horizon_epochs=3, early_stopping_patience=2)
    teacher = train_teacher(teacher_config, data, root / "anneal", log=lambda _: None)
    assert teacher.stop_reason == "plateau", teacher.stop_detail
    assert len(teacher.history) > 3 and "extended after epoch" in teacher.stop_detail  # trained past the first plan
    curve = [r["eval_accuracy"] for r in teacher.history]
    assert teacher.best_epoch > 3 and max(curve[:3]) < teacher.eval_accuracy, curve  # improving after epoch 3
    assert not teacher.warnings and "Stopped: **plateau**" in teacher.report_path.read_text()
    assert {r["phase"] for r in teacher.history} == {"anneal"}
    rates = [r["learning_rate"] for r in teacher.history]
    assert rates == sorted(rates, reverse=True)  # falls, never jumps
    if "since the plan was extended" in teacher.stop_detail:  # the extension's bet lost: patience ran out
        assert len(curve) - _last_gain(curve) >= 2
    else:  # the plan ran out: its rate reached zero
        assert rates[-1] < 0.02 * rates[0]
    assert f"| {teacher.best_epoch} (kept) |" in teacher.report_path.read_text()


def test_a_teacher_cut_by_the_ceiling_while_improving_is_reported_with_a_warning(tiny_teacher_setup):
    from tasks.teacher import TeacherResult, train_teacher

    root, config, data = tiny_teacher_setup
    teacher = train_teacher(_teacher_config(config, epochs=3), data, root / "ceiling", log=lambda _: None)
    assert teacher.stop_reason == "ceiling" and len(teacher.history) == 3
    assert [r["phase"] for r in teacher.history] == ["stable", "stable", "decay"]  # the ceiling's last epoch decays
    assert teacher.warnings and "still improving" in teacher.warnings[0]
    report = teacher.report_path.read_text()
    assert "**Warning:**" in report and "raise training.epochs" in report
    saved = TeacherResult(**json.loads((root / "ceiling" / "teacher.json").read_text()))
    assert saved.stop_reason == "ceiling" and saved.warnings == teacher.warnings


def test_learning_rate_probe_continues_the_best_rate_and_says_why(tiny_teacher_setup):
    from tasks.config import LearningRateProbeConfig
    from tasks.teacher import train_teacher

    root, config, data = tiny_teacher_setup
    probe = LearningRateProbeConfig(enabled=True, learning_rates=[1e-7, 1e-3], steps=40, eval_rows=60)
    teacher = train_teacher(
        _teacher_config(config, learning_rate_probe=probe, epochs=6), data, root / "probe", log=lambda _: None
    )
    assert [record["learning_rate"] for record in teacher.learning_rate_probe] == [1e-7, 1e-3]
    scores = {r["learning_rate"]: r["eval_accuracy"] for r in teacher.learning_rate_probe}
    assert scores[1e-3] > scores[1e-7]
    assert teacher.learning_rate == 1e-3 and "1e-07 → " in teacher.learning_rate_reason
    assert "0.001 scored best and was continued" in teacher.learning_rate_reason
    assert teacher.history[0]["eval_accuracy"] >= scores[1e-3] - 0.05  # continued, not restarted from scratch
    assert "| probed learning rate |" in teacher.report_path.read_text()


def test_an_interrupted_plateau_run_resumes_to_the_same_curve(tiny_teacher_setup, monkeypatch):
    import tasks.teacher as teacher_stage

    root, config, data = tiny_teacher_setup
    teacher_config = _teacher_config(config, epochs=8)
    reference = teacher_stage.train_teacher(teacher_config, data, root / "reference", log=lambda _: None)

    real = teacher_stage.torch.nn.functional.cross_entropy
    calls = {"count": 0}
    steps_per_epoch = -(-data.rows["train"] // 16)

    def crashing_cross_entropy(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 4 * steps_per_epoch + 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(teacher_stage.torch.nn.functional, "cross_entropy", crashing_cross_entropy)
    with pytest.raises(RuntimeError, match="simulated crash"):
        teacher_stage.train_teacher(teacher_config, data, root / "interrupted", log=lambda _: None)
    monkeypatch.setattr(teacher_stage.torch.nn.functional, "cross_entropy", real)
    messages: list[str] = []
    resumed = teacher_stage.train_teacher(teacher_config, data, root / "interrupted", log=messages.append)
    assert any("resuming after epoch 4" in m for m in messages)
    assert [(r["epoch"], r["phase"]) for r in resumed.history] == [(r["epoch"], r["phase"]) for r in reference.history]
    for before, after in zip(reference.history, resumed.history, strict=True):
        assert after["eval_accuracy"] == pytest.approx(before["eval_accuracy"])
        assert after["learning_rate"] == pytest.approx(before["learning_rate"])
    assert resumed.stop_reason == reference.stop_reason and resumed.best_epoch == reference.best_epoch
