"""Operators choose a profile and a few overrides; the README's table is the profiles' own."""

from pathlib import Path

import pytest

from kontext_engine.profiles import PROFILES, markdown_table, settings_from_parameters
from kontext_engine.settings import EngineSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_default_profile_is_the_cpu_smoke_model():
    assert settings_from_parameters({}) == EngineSettings(model_source="embedded-tiny", dtype="auto")


def test_a_profile_carries_its_settings_and_overrides_apply_on_top():
    settings = settings_from_parameters({"profile": "gpu-fp8", "model_source": "/models/FLUX.1-Kontext-dev",
                                         "cache_threshold": "0.08", "warmup_shapes": ""})
    assert settings.fp8 and settings.fuse_qkv and settings.compile == "regional" and settings.compile_vae
    assert settings.model_source == "/models/FLUX.1-Kontext-dev" and settings.cache_threshold == 0.08
    assert settings.warmup_shapes == ""  # an override may switch a profile's warm-up off


@pytest.mark.parametrize("key", ["fuse_qkv", "compile", "fp8", "inductor_recipe", "attention_backend", "model_sourse"])
def test_experiment_switches_and_typos_are_not_operator_parameters(key):
    with pytest.raises(ValueError, match=key):
        settings_from_parameters({key: "true"})


def test_an_unknown_profile_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="gpu-bf16"):
        settings_from_parameters({"profile": "gpu-fastest"})


def test_malformed_values_fail_with_the_key():
    with pytest.raises(ValueError, match="cache_threshold"):
        settings_from_parameters({"cache_threshold": "x"})


def test_environment_overrides_config_parameters():
    settings = settings_from_parameters(
        {"profile": "cpu-smoke", "model_source": "embedded-tiny"},
        {"KONTEXT_SETTING_MODEL_SOURCE": "/models/FLUX.1-Kontext-dev", "KONTEXT_SETTING_PROFILE": "gpu-bf16",
         "HOME": "/"},
    )
    assert settings.model_source == "/models/FLUX.1-Kontext-dev" and settings.compile == "regional"


def test_a_misspelt_environment_override_fails_with_its_name():
    with pytest.raises(ValueError, match="profil"):
        settings_from_parameters({}, {"KONTEXT_SETTING_PROFIL": "gpu-bf16"})


def test_every_profile_names_real_settings():
    for profile in PROFILES.values():
        EngineSettings(**profile.settings)


def test_the_readme_shows_the_profiles_as_they_are():
    assert markdown_table() in README.read_text()
