import json

from kontext_engine.tiny_model import TINY_MODEL_VERSION, ensure_tiny_model


def test_built_once_then_reused(tmp_path):
    first = ensure_tiny_model(tmp_path)
    stamp = (first / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == first
    assert (first / "model_index.json").stat().st_mtime_ns == stamp
    assert first.name == TINY_MODEL_VERSION
    assert [p.name for p in tmp_path.iterdir()] == [TINY_MODEL_VERSION]  # no staging left behind


def test_is_a_real_flux_kontext_pipeline(tmp_path):
    index = json.loads((ensure_tiny_model(tmp_path) / "model_index.json").read_text())
    assert index["_class_name"] == "FluxKontextPipeline"
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
