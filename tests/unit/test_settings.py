import pytest

from kontext_engine.settings import EngineSettings


def test_defaults_select_the_embedded_model():
    assert EngineSettings.from_parameters({}) == EngineSettings(model_source="embedded-tiny", dtype="auto")


def test_unknown_parameter_fails_with_its_name():
    with pytest.raises(ValueError, match="model_sourse"):
        EngineSettings.from_parameters({"model_sourse": "x"})
