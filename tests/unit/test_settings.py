import pytest

from kontext_engine.settings import EngineSettings


def test_defaults_select_the_embedded_model():
    assert EngineSettings.from_parameters({}) == EngineSettings(model_source="embedded-tiny", dtype="auto")


def test_unknown_parameter_fails_with_its_name():
    with pytest.raises(ValueError, match="model_sourse"):
        EngineSettings.from_parameters({"model_sourse": "x"})


def test_parameters_are_typed():
    settings = EngineSettings.from_parameters(
        {"cache_threshold": "0.08", "fuse_qkv": "true", "compile": "regional", "warmup_steps": "3", "fp8": "off"}
    )
    assert settings.cache_threshold == 0.08 and settings.fuse_qkv is True and settings.fp8 is False
    assert settings.compile == "regional" and settings.warmup_steps == 3


@pytest.mark.parametrize("key, value", [("fuse_qkv", "maybe"), ("warmup_steps", "two"), ("cache_threshold", "x")])
def test_malformed_values_fail_with_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        EngineSettings.from_parameters({key: value})


def test_environment_overrides_config_parameters():
    settings = EngineSettings.from_parameters(
        {"model_source": "embedded-tiny", "compile": "none"},
        {"KONTEXT_SETTING_MODEL_SOURCE": "/models/FLUX.1-Kontext-dev", "KONTEXT_SETTING_FUSE_QKV": "true", "HOME": "/"},
    )
    assert settings.model_source == "/models/FLUX.1-Kontext-dev" and settings.fuse_qkv is True
    assert settings.compile == "none"


def test_a_misspelt_environment_override_fails_with_its_name():
    with pytest.raises(ValueError, match="fuse_qvk"):
        EngineSettings.from_parameters({}, {"KONTEXT_SETTING_FUSE_QVK": "true"})
