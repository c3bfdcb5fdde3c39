from pathlib import Path

import pytest

from tasks.config import ConfigError, PipelineConfig, load_config, parse_override

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert isinstance(config, PipelineConfig)
    assert config.publish.store.bucket
    assert len(config.config_hash()) == 64


def test_configs_folder_is_not_empty():
    assert (CONFIG_DIR / "demo.yaml").is_file()


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "model_name: m\npublish:\n  store:\n    bucket: int8-engines\n"


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = write(tmp_path, BASE + "teacher:\n  training:\n    epochz: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "teacher.training.epochz: unknown key" in message


def test_wrong_type_names_key_expected_type_and_value(tmp_path):
    path = write(tmp_path, BASE + "teacher:\n  training:\n    epochs: three\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "teacher.training.epochs" in message
    assert "integer" in message
    assert "'three'" in message


def test_string_number_is_not_silently_coerced(tmp_path):
    path = write(tmp_path, BASE + "teacher:\n  max_seq_length: '64'\n")
    with pytest.raises(ConfigError, match=r"teacher\.max_seq_length"):
        load_config(path)


def test_missing_required_section(tmp_path):
    path = write(tmp_path, "model_name: m\n")
    with pytest.raises(ConfigError, match="publish: required key is missing"):
        load_config(path)


def test_cross_field_check(tmp_path):
    path = write(tmp_path, BASE + "teacher:\n  random_init:\n    hidden_size: 30\n    num_attention_heads: 4\n")
    with pytest.raises(ConfigError, match="multiple of num_attention_heads"):
        load_config(path)


def test_overrides_apply_with_yaml_types(tmp_path):
    path = write(tmp_path, BASE)
    config = load_config(
        path, ["teacher.training.epochs=5", "validate.max_accuracy_drop=0.25", "data.text_pair_column=title"]
    )
    assert config.teacher.training.epochs == 5
    assert config.validate_.max_accuracy_drop == 0.25
    assert config.data.text_pair_column == "title"


def test_exponent_floats_read_as_numbers_in_files_and_overrides(tmp_path):
    # PyYAML's YAML 1.1 reads 1e-4 as a string; strict models would then refuse a plainly written rate.
    path = write(tmp_path, BASE + "teacher:\n  training:\n    learning_rate: 3e-5\n")
    config = load_config(path, ["quantize.training.learning_rate=2E-6", "validate.max_accuracy_drop=1e0"])
    assert config.teacher.training.learning_rate == pytest.approx(3e-5)
    assert config.quantize.training.learning_rate == pytest.approx(2e-6)
    assert config.validate_.max_accuracy_drop == 1.0
    assert config.teacher.training.epochs == 20 and isinstance(config.teacher.training.epochs, int)
    assert parse_override("a='1e-4'") == (["a"], "1e-4")  # quoted stays text
    assert parse_override("a=1.2.3") == (["a"], "1.2.3")


def test_override_errors_are_reported(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["teacher.training.epochs"])
    with pytest.raises(ConfigError, match="model_name is a value, not a section"):
        load_config(path, ["model_name.x=1"])
    with pytest.raises(ConfigError, match=r"teacher\.training\.epochs"):
        load_config(path, ["teacher.training.epochs=-1"])
    with pytest.raises(ConfigError, match=r"quantize\.choice_ci_floor_points"):
        load_config(path, ["quantize.choice_ci_floor_points=-0.5"])
    assert load_config(path, ["quantize.choice_ci_floor_points=null"]).quantize.choice_ci_floor_points is None


def test_parse_override_parses_lists_and_null():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model_name: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_config_hash_changes_with_values(tmp_path):
    path = write(tmp_path, BASE)
    assert load_config(path).config_hash() == load_config(path).config_hash()
    assert load_config(path).config_hash() != load_config(path, ["teacher.training.seed=1"]).config_hash()
