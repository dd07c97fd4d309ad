"""Each optimization on the tiny model: it is applied, changes nothing it should not, stays deterministic."""

import gc
import io
import json
import os
import re
import subprocess
import sys
import time
import types
import weakref
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from kontext_engine import EditRequest, KontextEngine
from kontext_engine.engine import warmup_requests
from kontext_engine.optimizations import (INDUCTOR_RECIPE, UnsupportedOption, _compile, _fuse_qkv,
                                         compile_cache_key, load_compile_artifacts, save_compile_artifacts,
                                         validate)
from kontext_engine.settings import EngineSettings

BASE = EngineSettings()


def edit_request(seed=3, steps=4):
    image = Image.new("RGB", (64, 64), (180, 60, 20))
    return EditRequest("make it snowy", image, seed, steps, 2.5, 64, 64, "png")


def first_double_block(engine):
    return next(m for m in engine.pipeline.transformer.modules() if type(m).__name__ == "FluxTransformerBlock")


def image_of(result):
    return np.asarray(Image.open(io.BytesIO(result.image)), dtype=np.float32)


@pytest.fixture(scope="module")
def baseline(kontext_cache_dir):
    (result,) = KontextEngine.load(BASE).run([edit_request()])
    return image_of(result)


def run(settings, request=None):
    (result,) = KontextEngine.load(settings).run([request or edit_request()])
    return result


def test_fused_qkv_is_applied_and_keeps_the_output(baseline):
    unfused = sum(p.numel() for p in KontextEngine.load(BASE).pipeline.transformer.parameters())
    engine = KontextEngine.load(replace(BASE, fuse_qkv=True))
    attention = first_double_block(engine).attn
    assert attention.fused_projections and hasattr(attention, "to_qkv") and hasattr(attention, "to_added_qkv")
    # diffusers keeps the separate projections for unfusing; nothing runs them, so they are dropped
    assert not any(hasattr(attention, name) for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"))
    assert sum(p.numel() for p in engine.pipeline.transformer.parameters()) == unfused
    (result,) = engine.run([edit_request()])
    assert np.abs(image_of(result) - baseline).max() <= 2


def test_fused_qkv_frees_each_attentions_projections_before_the_next(monkeypatch, kontext_cache_dir):
    """Held until the end, the separate projections of every attention raise the loading peak by their size
    (3.3 GiB at full size, measured on an H100)."""
    from diffusers.models.attention import AttentionModuleMixin

    transformer = KontextEngine.load(BASE).pipeline.transformer
    projections = [weakref.ref(m.to_q) for m in transformer.modules() if isinstance(m, AttentionModuleMixin)]
    alive_at_each_fusion = []
    fuse_projections = AttentionModuleMixin.fuse_projections

    def counting(self):
        gc.collect()
        alive_at_each_fusion.append(sum(ref() is not None for ref in projections))
        return fuse_projections(self)

    monkeypatch.setattr(AttentionModuleMixin, "fuse_projections", counting)
    _fuse_qkv(transformer)
    assert len(projections) > 1
    assert alive_at_each_fusion == list(range(len(projections), 0, -1))


def test_vae_channels_last_keeps_the_output(baseline):
    engine = KontextEngine.load(replace(BASE, vae_channels_last=True))
    conv = engine.pipeline.vae.decoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    (result,) = engine.run([edit_request()])
    assert np.abs(image_of(result) - baseline).max() <= 2


def test_first_block_cache_with_no_hits_matches_baseline(baseline):
    result = run(replace(BASE, cache_threshold=1e-12))
    assert result.metadata["steps_computed"] == 4
    assert np.array_equal(image_of(result), baseline)


def test_first_block_cache_skips_steps_and_is_deterministic(baseline):
    settings = replace(BASE, cache_threshold=100.0)  # every step after the first reuses the cache
    first, second = run(settings), run(settings)
    assert first.metadata["steps_computed"] == 1 and first.metadata["steps"] == 4
    assert np.array_equal(image_of(first), image_of(second))
    assert not np.array_equal(image_of(first), baseline)


def test_the_installed_cache_at_threshold_0_is_diffusers_own_loop(baseline, kontext_cache_dir):
    """The cache is always installed; with threshold 0 the output equals the untouched pipeline's."""
    from kontext_engine.loading import load_pipeline

    pipeline = load_pipeline(BASE.model_source, torch.device("cpu"), torch.float32)
    assert type(pipeline.transformer.transformer_blocks[0]).__name__ == "FluxTransformerBlock"  # not installed
    request = edit_request()
    with torch.inference_mode():
        (image,) = pipeline(image=[request.image], prompt=[request.prompt], height=64, width=64, max_area=64 * 64,
                            _auto_resize=False, num_inference_steps=4, guidance_scale=2.5,
                            generator=[torch.Generator("cpu").manual_seed(request.seed)]).images
    assert np.array_equal(np.asarray(image, dtype=np.float32), baseline)


def test_a_request_threshold_overrides_the_default_and_splits_batches(kontext_cache_dir):
    engine = KontextEngine.load(BASE, max_batch_size=4)  # server default: exact
    cached = replace(edit_request(seed=2), cache_threshold=100.0)
    exact, fast, also_exact = engine.run([edit_request(seed=1), cached, replace(edit_request(seed=3), cache_threshold=0.0)])
    assert [r.metadata["batch_size"] for r in (exact, fast, also_exact)] == [2, 1, 2]  # default 0 batches with 0
    assert (exact.metadata["steps_computed"], exact.metadata["steps_skipped"]) == (4, 0)
    assert (fast.metadata["steps_computed"], fast.metadata["steps_skipped"]) == (1, 3)
    assert [r.metadata["cache_threshold"] for r in (exact, fast)] == [0.0, 100.0]


def test_first_block_cache_counts_per_call_and_batches(kontext_cache_dir):
    engine = KontextEngine.load(replace(BASE, cache_threshold=100.0), max_batch_size=2)
    results = engine.run([edit_request(seed=1), edit_request(seed=2)])
    assert [r.metadata["batch_size"] for r in results] == [2, 2]
    assert [r.metadata["steps_computed"] for r in results] == [1, 1]
    (again,) = engine.run([edit_request(seed=1)])  # a fresh context: the first step is computed again
    assert again.metadata["steps_computed"] == 1


def test_regional_compile_matches_eager_and_persists_artifacts_over_an_unreadable_file(baseline, tmp_path, caplog):
    settings = replace(
        BASE, compile="regional", warmup_shapes="64x64:edit", warmup_steps=1, compile_cache_dir=str(tmp_path)
    )
    model_config = dict(KontextEngine.load(BASE).pipeline.transformer.config)
    artifacts = tmp_path / f"{compile_cache_key(settings, torch.device('cpu'), model_config)}.bin"
    artifacts.write_bytes(b"truncated")  # a cut-off write, or a file from another build
    with caplog.at_level("INFO", logger="kontext_engine.engine"):
        engine = KontextEngine.load(settings)
    assert re.search(rf"compile artifacts unreadable in [\d.]+ s: {re.escape(str(artifacts))}", caplog.text)  # a cold compile
    looked_up = re.search(r"FX graph cache hits (\d+), FX graph cache misses (\d+)", caplog.text)  # the warm-up says
    assert looked_up and int(looked_up[1]) + int(looked_up[2]) >= 1  # whether its graphs came from a cache
    assert first_double_block(engine)._compiled_call_impl is not None
    (result,) = engine.run([edit_request()])
    assert np.abs(image_of(result) - baseline).max() <= 2
    assert [p.name for p in tmp_path.iterdir()] == [artifacts.name]  # replaced, no staging file left
    assert torch.compiler.load_cache_artifacts(artifacts.read_bytes()) is not None


def test_fuse_qkv_double_false_leaves_the_double_blocks_attentions_apart():
    engine = KontextEngine.load(replace(BASE, fuse_qkv=True, fuse_qkv_double=False))
    double = first_double_block(engine).attn
    single = next(m for m in engine.pipeline.transformer.modules() if type(m).__name__ == "FluxSingleTransformerBlock").attn
    assert not double.fused_projections and hasattr(double, "to_q") and hasattr(double, "add_q_proj")
    assert single.fused_projections and hasattr(single, "to_qkv") and not hasattr(single, "to_q")


# One server start: load the volume's artifacts, compile the graphs named (each multiplies by its constant),
# save; prints what save_compile_artifacts returned.
START = """
import sys, torch
from pathlib import Path
from kontext_engine.optimizations import load_compile_artifacts, save_compile_artifacts
path = Path(sys.argv[1])
_, loaded = load_compile_artifacts(path)
for constant in sys.argv[2:]:
    namespace = {"torch": torch}
    exec(f"def f(x):\\n    return x * torch.full((3,), {constant})", namespace)
    torch.compile(namespace["f"])(torch.ones(3))
print(save_compile_artifacts(path, loaded))
"""


def test_artifacts_are_written_again_only_when_a_start_used_some_the_file_lacks(tmp_path):
    artifacts = tmp_path / "volume" / "artifacts.bin"

    def start(*graphs) -> str:  # a fresh process with an empty local inductor cache, as a new pod
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{time.monotonic_ns()}")}
        done = subprocess.run([sys.executable, "-c", START, str(artifacts), *graphs], env=env, capture_output=True,
                              text=True, check=True)
        return done.stdout.split()[-1]

    assert int(start("2.5")) > 0
    os.utime(artifacts, (0, 0))
    assert start("2.5") == "None"  # all from the file: replicas on one volume do not rewrite it per start
    assert artifacts.stat().st_mtime == 0
    assert int(start("2.5", "3.5")) > 0  # one graph the file lacked: saved, with the one it had
    assert start("3.5", "2.5") == "None"


# One server start with the tiny model: load, warm up, edit; the warm-up's log on stderr, the image to a file.
ENGINE_START = """
import json, logging, sys
from PIL import Image
from kontext_engine import EditRequest, KontextEngine
from kontext_engine.settings import EngineSettings
logging.basicConfig(level=logging.INFO)
engine = KontextEngine.load(EngineSettings(**json.loads(sys.argv[1])))
(result,) = engine.run([EditRequest("make it snowy", Image.new("RGB", (64, 64), (180, 60, 20)), 3, 4, 2.5, 64, 64, "png")])
open(sys.argv[2], "wb").write(result.image)
engine.run([EditRequest("make it snowy", Image.new("RGB", (96, 64)), 3, 1, 2.5, 96, 64, "png")])  # a size not warmed
"""


def test_dynamo_cache_lets_a_warm_start_skip_tracing(tmp_path, baseline):
    settings = {"compile": "regional", "compile_vae": True, "dynamo_cache": True, "warmup_shapes": "64x64:edit",
                "warmup_steps": 1, "compile_cache_dir": str(tmp_path / "volume")}

    def start(name: str) -> tuple[int, int]:  # a fresh process with an empty local inductor cache, as a new pod
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{name}")}
        done = subprocess.run([sys.executable, "-c", ENGINE_START, json.dumps(settings), str(tmp_path / f"{name}.png")],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        counts = re.search(r"graphs traced (\d+), Dynamo cache entries loaded (\d+)", done.stderr)
        image = np.asarray(Image.open(tmp_path / f"{name}.png"), dtype=np.float32)
        assert np.abs(image - baseline).max() <= 2
        return int(counts[1]), int(counts[2])

    traced, hits = start("empty")
    assert traced >= 3 and hits == 0  # one graph per block class and the VAE decoder at least
    assert start("loaded") == (0, 3)  # every trace came from the artifacts; a new size then traces (and works)


def test_dynamo_cache_needs_regional_compile_and_plain_fp8_weights():
    cpu = torch.device("cpu")
    with pytest.raises(UnsupportedOption, match="compile=regional"):
        validate(replace(BASE, dynamo_cache=True, compile="full"), cpu)
    with pytest.raises(UnsupportedOption, match="fp8_linear=scaled_mm"):
        validate(replace(BASE, dynamo_cache=True, compile="regional", fp8=True), cpu)
    with pytest.raises(UnsupportedOption, match="context_parallel"):
        validate(replace(BASE, dynamo_cache=True, compile="regional", context_parallel=2), cpu)
    validate(replace(BASE, dynamo_cache=True, compile="regional"), cpu)


def test_a_start_that_retraced_saves_its_artifacts_again(tmp_path):
    torch.compile(lambda x: x * 3)(torch.ones(3))  # something for the mega-cache to hold
    _, info = torch.compiler.save_cache_artifacts()
    loaded = frozenset((kind, key) for kind, keys in info.artifacts.items() for key in keys)
    assert save_compile_artifacts(tmp_path / "a.bin", loaded) is None  # nothing new: left alone
    assert save_compile_artifacts(tmp_path / "a.bin", loaded, retraced=True) > 0


def test_artifacts_torch_cannot_save_or_load_cost_a_warning_not_the_start(tmp_path, monkeypatch, caplog):
    def fails(*args):
        raise RuntimeError("Failed to save package")

    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", fails)
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", fails)
    (tmp_path / "a.bin").write_bytes(b"x")
    with caplog.at_level("WARNING", logger="kontext_engine.optimizations"):
        assert save_compile_artifacts(tmp_path / "a.bin") == 0
        assert load_compile_artifacts(tmp_path / "a.bin") == ("unreadable", frozenset())
    assert caplog.text.count("Failed to save package") == 2


def test_artifacts_that_cannot_be_saved_cost_a_warning_not_the_start(tmp_path, caplog):
    torch.compile(lambda x: x * 2)(torch.ones(3))  # something for the mega-cache to hold
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory should be")
    with caplog.at_level("WARNING", logger="kontext_engine.optimizations"):
        assert save_compile_artifacts(blocked / "artifacts.bin") == 0
    assert "compile artifacts not saved" in caplog.text
    saved = tmp_path / "cache" / "artifacts.bin"
    saved.parent.mkdir()
    killed, live = saved.parent / ".artifacts.bin.killed.tmp", saved.parent / ".artifacts.bin.live.tmp"
    killed.write_bytes(b"x")
    live.write_bytes(b"x")
    os.utime(killed, (time.time() - 3600, time.time() - 3600))  # its writer died an hour ago
    assert save_compile_artifacts(saved) > 0
    assert sorted(p.name for p in saved.parent.iterdir()) == [live.name, "artifacts.bin"]  # ours and the dead one gone
    assert saved.stat().st_mode & 0o777 == 0o644  # readable by the other pods of the volume, as before


def test_warm_up_compiles_every_batch_size_so_serving_compiles_nothing(tmp_path):
    settings = replace(BASE, compile="regional", warmup_shapes="64x64:edit", warmup_steps=1,
                       compile_cache=False)
    engine = KontextEngine.load(settings, max_batch_size=3)
    compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    results = engine.run([edit_request(seed=s, steps=2) for s in (1, 2)] + [edit_request(seed=3)])
    assert [r.metadata["batch_size"] for r in results] == [2, 2, 1]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == compiled_graphs


def test_static_shapes_warm_up_every_batch_size_so_serving_compiles_nothing(tmp_path):
    settings = replace(BASE, compile="regional", static_shapes=True, warmup_shapes="64x64:edit", warmup_steps=1,
                       compile_cache=False)
    engine = KontextEngine.load(settings, max_batch_size=3)
    compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    results = engine.run([edit_request(seed=s, steps=2) for s in (1, 2)] + [edit_request(seed=3)])
    results += engine.run([edit_request(seed=s, steps=2) for s in (4, 5, 6)])
    assert [r.metadata["batch_size"] for r in results] == [2, 2, 1, 3, 3, 3]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == compiled_graphs


def test_static_shapes_serve_more_sizes_than_dynamos_default_limit():
    """One graph per size: past Dynamo's default of 8, fullgraph compilation would fail the request."""
    engine = KontextEngine.load(replace(BASE, compile="regional", static_shapes=True, compile_cache=False))
    sizes = [(64 + 16 * i, 64) for i in range(10)]
    results = engine.run([EditRequest("snow", Image.new("RGB", size), 1, 1, 2.5, *size, "png") for size in sizes])
    assert [(r.metadata["width"], r.metadata["height"]) for r in results] == sizes


def test_compile_cache_key_changes_with_compile_settings(tmp_path):
    config = {"num_layers": 1}
    cpu = torch.device("cpu")
    regional = compile_cache_key(replace(BASE, compile="regional"), cpu, config)
    assert regional == compile_cache_key(replace(BASE, compile="regional"), cpu, config)
    assert regional != compile_cache_key(replace(BASE, compile="full"), cpu, config)
    assert regional != compile_cache_key(replace(BASE, compile="regional"), cpu, {"num_layers": 2})
    assert regional != compile_cache_key(replace(BASE, compile="regional", context_parallel=2), cpu, config)
    # Weights from a directory compile to other graphs than the architecture built in memory (measured).
    in_directory = compile_cache_key(replace(BASE, compile="regional", model_source="/models/x"), cpu, config)
    assert in_directory != regional
    # Its config also records where and by what it was saved: not part of the architecture.
    saved = {**config, "_name_or_path": "/models/x", "_diffusers_version": "0.42.1", "_use_default_values": ["y"]}
    assert in_directory == compile_cache_key(replace(BASE, compile="regional", model_source="/models/x"), cpu, saved)
    # Where the artifacts live, and how a directory is spelled, are not what was compiled.
    assert regional == compile_cache_key(replace(BASE, compile="regional", compile_cache_dir="/mnt/c"), cpu, config)
    weights = tmp_path / "weights"
    weights.mkdir()
    assert (compile_cache_key(replace(BASE, compile="regional", model_source=str(weights)), cpu, config)
            == compile_cache_key(replace(BASE, compile="regional", model_source=f"{tmp_path}/./weights/"), cpu, config))


def test_compile_cache_key_changes_with_software_and_gpu(monkeypatch):
    """A changed torch, diffusers, torchao, GPU or device index never loads a stale artifact."""
    import diffusers

    config, settings = {"num_layers": 1}, replace(BASE, compile="regional")
    key = compile_cache_key(settings, torch.device("cpu"), config)
    for module, attribute in ((torch, "__version__"), (diffusers, "__version__")):
        with monkeypatch.context() as patched:
            patched.setattr(module, attribute, "0.0.0-other")
            assert compile_cache_key(settings, torch.device("cpu"), config) != key
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "torchao", types.SimpleNamespace(__version__="0.0.0-other"))
        assert compile_cache_key(settings, torch.device("cpu"), config) != key
    cards = {}
    for card, index in (("NVIDIA H100 80GB HBM3", 0), ("NVIDIA H200", 0), ("NVIDIA H100 80GB HBM3", 1)):
        with monkeypatch.context() as patched:
            patched.setattr(torch.cuda, "get_device_name", lambda device, card=card: card)
            patched.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
            cards[card, index] = compile_cache_key(settings, torch.device("cuda", index), config)
    # Inductor's entries name the device: cuda:1 gains nothing from cuda:0's artifacts, so each has its own.
    assert len({key, *cards.values()}) == 4


def test_fp8_is_refused_on_cpu_naming_the_option():
    with pytest.raises(UnsupportedOption, match="fp8"):
        KontextEngine.load(replace(BASE, fp8=True))


def test_fp8_needs_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    with pytest.raises(UnsupportedOption, match="bfloat16"):
        validate(replace(BASE, fp8=True, dtype="float16"), torch.device("cuda", 0))
    validate(replace(BASE, fp8=True), torch.device("cuda", 0))  # auto: bfloat16 on a GPU


@pytest.mark.parametrize("field, value", [("compile", "fastest"), ("compile_mode", "turbo"), ("cache_threshold", -1.0),
                                          ("fp8_linear", "fastest")])
def test_bad_settings_are_refused_naming_the_option(field, value):
    with pytest.raises(UnsupportedOption, match=field):
        KontextEngine.load(replace(BASE, **{field: value}))


def test_warmup_shapes_parse_and_reject_garbage():
    edit, text = warmup_requests("128x64:edit, 64x96:text", steps=2)
    assert (edit.width, edit.height, edit.image.size, edit.steps) == (128, 64, (128, 64), 2)
    assert (text.width, text.height, text.image) == (64, 96, None)
    with pytest.raises(ValueError, match="warmup_shapes"):
        warmup_requests("big:edit", steps=1)


def test_attention_backend_is_applied_and_keeps_the_output(baseline):
    engine = KontextEngine.load(replace(BASE, attention_backend="_native_math"))
    processor = first_double_block(engine).attn.processor
    assert getattr(processor, "_attention_backend", None) is not None
    (result,) = engine.run([edit_request()])
    assert np.abs(image_of(result) - baseline).max() <= 2


def test_full_compile_with_compiled_vae_recipe_and_multi_kernel_matches_eager(baseline, tmp_path, monkeypatch):
    import torch._inductor.config as inductor

    for key in INDUCTOR_RECIPE:
        monkeypatch.setattr(inductor, key, getattr(inductor, key))  # process-wide flags: restored after the test
    monkeypatch.setattr(inductor.triton, "multi_kernel", inductor.triton.multi_kernel)
    monkeypatch.setattr(inductor, "fx_graph_cache", inductor.fx_graph_cache)
    monkeypatch.setattr(torch._functorch.config, "enable_autograd_cache", torch._functorch.config.enable_autograd_cache)
    settings = replace(BASE, compile="full", compile_vae=True, inductor_recipe=True, multi_kernel=True,
                       compile_cache=False)
    engine = KontextEngine.load(settings)
    assert engine.pipeline.transformer._compiled_call_impl is not None
    assert engine.pipeline.vae.decoder._compiled_call_impl is not None
    assert inductor.coordinate_descent_tuning is True and inductor.epilogue_fusion is False
    assert inductor.triton.multi_kernel == 1  # a GPU-only choice (Triton kernels); on the CPU nothing changes
    assert inductor.fx_graph_cache is False  # torch 2.11 fails to load multi-kernel graphs from its caches
    (result,) = engine.run([edit_request()])
    assert np.abs(image_of(result) - baseline).max() <= 2


def test_coordinate_descent_turns_on_inductors_tuning(monkeypatch):
    import torch._inductor.config as inductor

    for key in ("coordinate_descent_tuning", "coordinate_descent_check_all_directions"):
        monkeypatch.setattr(inductor, key, False)  # process-wide flags: restored after the test
    nothing_to_compile = types.SimpleNamespace(transformer=None, vae=None)
    _compile(nothing_to_compile, replace(BASE, coordinate_descent=True))
    assert inductor.coordinate_descent_tuning is True
    assert inductor.coordinate_descent_check_all_directions is False  # left alone: it stalled FP8's first compile


def test_a_wholly_compiled_transformer_is_not_recompiled_at_every_step_of_a_cached_call(monkeypatch):
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)  # a recompile storm fails the call
    engine = KontextEngine.load(replace(BASE, compile="full", compile_cache=False))
    steps = 2 * torch._dynamo.config.recompile_limit  # past the limit if each computed step compiled again
    request = replace(edit_request(steps=steps), cache_threshold=1e-9)  # the cache decides at every step, and misses
    (result,) = engine.run([request])
    assert not isinstance(result, Exception), result
    assert result.metadata["steps_computed"] == steps
