"""cache-dit's best configuration for this pipeline: the peer the benchmark measures itself against.

`bench_inprocess --variants ...,cache_dit` runs it like a variant of ours, in the same process, on the
same pipeline, inputs, clocks and baseline (so its fidelity figures are against the same eager image).
Its stack (cache-dit 1.5.3): DBCache with one front block and no back blocks (F1B0, the First Block Cache
family) at the settings' cache threshold; torchao float8 per-row on every Linear of the transformer's
repeated blocks (its exclusions, names containing "embed" or "mod", match none of a Flux block's);
cache-dit's recommended inductor flags (`set_compile_configs()`: coordinate-descent tuning in all
directions, no epilogue fusion, dead-code elimination), then torch.compile of the whole transformer (or its
repeated blocks). Those flags are process-wide: run it last.
"""

from __future__ import annotations

from typing import Sequence

import torch

from kontext_engine import EditRequest, EngineResult
from kontext_engine.codecs import encode_image
from kontext_engine.loading import load_pipeline, resolve_dtype
from kontext_engine.settings import EngineSettings


class CacheDitPeer:
    """What the benchmark needs of an engine (run, pipeline, close), over cache-dit's stack."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    @classmethod
    def load(cls, settings: EngineSettings, device: torch.device, worker_devices: Sequence = ()) -> "CacheDitPeer":
        """Reads cache_threshold, fp8, compile (none, full or regional), model_source and dtype."""
        import cache_dit
        from cache_dit import DBCacheConfig, QuantizeConfig

        if worker_devices:
            raise ValueError("the cache-dit peer runs on one device")
        pipeline = load_pipeline(settings.model_source, device, resolve_dtype(settings.dtype, device))
        cache_dit.enable_cache(
            pipeline,
            cache_config=DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0,
                                       residual_diff_threshold=settings.cache_threshold),
            quantize_config=QuantizeConfig(quant_type="float8_per_row") if settings.fp8 else None,
        )
        if settings.compile != "none":
            cache_dit.set_compile_configs()
            torch.set_float32_matmul_precision("high")
        if settings.compile == "full":
            pipeline.transformer = torch.compile(pipeline.transformer)
        elif settings.compile == "regional":
            pipeline.transformer.compile_repeated_blocks()
        return cls(pipeline)

    @torch.inference_mode()
    def run(self, requests: Sequence[EditRequest], on_step=None) -> list[EngineResult]:
        """One request per call, with the pipeline arguments the engine uses; on_step(indices, done, total)
        after every step, as the engine calls it."""
        import cache_dit

        (request,) = requests

        def step_end(pipeline, index, timestep, callback_kwargs):
            if on_step is not None:
                on_step([0], index + 1, request.steps)
            return callback_kwargs

        output = self.pipeline(
            image=request.image,
            prompt=request.prompt,
            height=request.height,
            width=request.width,
            max_area=request.height * request.width,
            _auto_resize=False,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            callback_on_step_end=step_end,
        )
        (stats,) = cache_dit.summary(self.pipeline, logging=False)
        cached = sorted(stats.cached_steps)
        return [EngineResult(image=encode_image(output.images[0], request.output_format),
                             metadata={"steps_computed": request.steps - len(cached), "cached_steps": cached})]

    def close(self) -> None:
        """Restores the pipeline class: cache-dit wraps FluxKontextPipeline.__call__ for the whole process,
        and the wrapper holds this pipeline (GPU memory) until it is released."""
        import cache_dit

        cache_dit.disable_cache(self.pipeline)
