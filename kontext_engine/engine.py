"""The engine: runs validated requests through a FluxKontextPipeline. Knows nothing of Triton."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from PIL import Image

from . import contract
from .batching import group_compatible
from .codecs import encode_image
from .loading import default_cache_dir, describe_source, load_pipeline, resolve_dtype
from .optimizations import (
    apply_optimizations,
    compile_cache_key,
    load_compile_artifacts,
    save_compile_artifacts,
    validate,
)
from .parsing import EditRequest
from .settings import EngineSettings

log = logging.getLogger(__name__)

# Called after every denoising step of a batch with (indices of its requests in the run() list,
# steps done, steps total): the hook for progress streaming and per-step metrics.
StepCallback = Callable[[Sequence[int], int, int], None]
# Whether the request at this index of the run() list was cancelled by its client.
CancelCheck = Callable[[int], bool]
# Called once per request, as soon as its batch ended, with (its index in the run() list, outcome).
DoneCallback = Callable[[int, "Union[EngineResult, Exception]"], None]


class Cancelled(Exception):
    """Every request of a batch was cancelled, so its denoising stopped early."""


@dataclass
class EngineResult:
    """One request's outcome: the encoded image (bytes, as the client receives them) and its metadata."""

    image: bytes
    metadata: dict = field(default_factory=dict)


class KontextEngine:
    def __init__(self, pipeline, device: torch.device, settings: EngineSettings, max_batch_size: int = 1):
        self.pipeline = pipeline
        self.device = device
        self.settings = settings
        self.max_batch_size = max_batch_size

    @classmethod
    def load(
        cls,
        settings: EngineSettings = EngineSettings(),
        device: torch.device = torch.device("cpu"),
        max_batch_size: int = 1,
        cache_dir: Optional[Path] = None,
    ) -> "KontextEngine":
        """Loads, optimizes and warms up a pipeline; the engine is ready to serve on return."""
        validate(settings, device)  # refuse impossible settings before loading gigabytes
        cache_dir = cache_dir or default_cache_dir()
        pipeline = load_pipeline(settings.model_source, device, resolve_dtype(settings.dtype, device), cache_dir)
        apply_optimizations(pipeline, settings, device)
        engine = cls(pipeline, device, settings, max_batch_size)
        engine.warm_up(cache_dir)
        return engine

    def warm_up(self, cache_dir: Path) -> None:
        """Runs each configured warm-up shape alone and, when batching is on, as a full batch (with
        static_shapes, at every batch size), reusing persisted compile artifacts when they exist. So
        torch.compile builds every graph a request will need now rather than under load, and a full
        batch is proven to fit in memory."""
        requests = warmup_requests(self.settings.warmup_shapes, self.settings.warmup_steps)
        if not requests:
            return
        compiled = self.settings.compile != "none" or self.settings.compile_vae
        artifacts = None
        if compiled and self.settings.compile_cache:
            key = compile_cache_key(self.settings, self.device, dict(self.pipeline.transformer.config))
            artifacts = Path(self.settings.compile_cache_dir or cache_dir / "compile-artifacts") / f"{key}.bin"
            loaded = load_compile_artifacts(artifacts)
            log.info("compile artifacts %s: %s", "loaded" if loaded else "absent", artifacts)
        started = time.perf_counter()
        batch_sizes = self._warmup_batch_sizes(compiled)
        for request in requests:
            for batch_size in batch_sizes:
                self.generate([request] * batch_size)
        log.info("warm-up of %d shape(s) at batch sizes %s took %.1f s", len(requests), batch_sizes,
                 time.perf_counter() - started)
        if artifacts is not None:
            log.info("compile artifacts saved: %d bytes", save_compile_artifacts(artifacts))

    def _warmup_batch_sizes(self, compiled: bool) -> tuple[int, ...]:
        """Static shapes compile each batch size; otherwise batch 1 and one symbolic graph for the rest."""
        if compiled and self.settings.static_shapes:
            return tuple(range(1, self.max_batch_size + 1))
        return (1, self.max_batch_size) if self.max_batch_size > 1 else (1,)

    def describe(self) -> str:
        """One start-up line: model source, device, dtype and every setting, on or off."""
        options = " ".join(f"{k}={v}" for k, v in self.settings.__dict__.items() if k != "model_source")
        return (
            f"model={describe_source(self.settings.model_source)} device={self.device} "
            f"dtype={self.pipeline.transformer.dtype} max_batch={self.max_batch_size} {options}"
        )

    def run(
        self,
        requests: Sequence[EditRequest],
        on_step: Optional[StepCallback] = None,
        is_cancelled: Optional[CancelCheck] = None,
        on_done: Optional[DoneCallback] = None,
    ) -> list[Union[EngineResult, Exception]]:
        """Runs every request; compatible ones share a pipeline call.

        Returns one entry per request, in order: its result, or the exception that ended its batch
        (a failing batch never affects another); on_done gets each entry as soon as its batch ends.
        A batch stops within one step once every one of its requests is cancelled; a batch with some
        live requests runs on for them.
        """
        outcomes: list[Union[EngineResult, Exception]] = [None] * len(requests)  # type: ignore[list-item]
        requests = [self._with_defaults(r) for r in requests]
        for group in group_compatible(requests, lambda r: r.batch_key, self.max_batch_size):
            batch = [requests[i] for i in group]
            step = None if on_step is None else functools.partial(on_step, group)
            stop = None if is_cancelled is None else (lambda group=group: all(map(is_cancelled, group)))
            try:
                results = self.generate(batch, step, stop)
            except Cancelled as exc:
                results = [exc] * len(batch)
            except Exception as exc:  # one failing batch must not take the others down
                log.exception("batch of %d failed", len(batch))
                results = [exc] * len(batch)
            for index, result in zip(group, results):
                outcomes[index] = result
                if on_done is not None:
                    on_done(index, result)
        return outcomes

    @torch.inference_mode()
    def generate(
        self,
        batch: Sequence[EditRequest],
        on_step: Optional[Callable[[int, int], None]] = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> list[EngineResult]:
        """One pipeline call for requests that share size, steps, guidance and image presence.

        on_step(done, total) runs after every step; should_stop() is asked before the call and after
        every step, and True raises Cancelled (no VAE decode, no encode).
        """
        first = batch[0]
        if any(r.batch_key != first.batch_key for r in batch):
            raise ValueError("generate() needs requests with equal batch_key")
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled before denoising started")

        def step_end(pipeline, step_index, timestep, callback_kwargs):
            if on_step is not None:
                on_step(step_index + 1, first.steps)
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled after step {step_index + 1} of {first.steps}")
            return callback_kwargs

        started = time.perf_counter()
        threshold = self._with_defaults(first).cache_threshold
        with self._cache_context(threshold) as cache:
            output = self.pipeline(
                image=[r.image for r in batch] if first.image is not None else None,
                prompt=[r.prompt for r in batch],
                height=first.height,
                width=first.width,
                max_area=first.height * first.width,  # the size asked for is the size rendered
                _auto_resize=False,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance,
                # CPU generators: the same seed gives the same noise on any device.
                generator=[torch.Generator("cpu").manual_seed(r.seed) for r in batch],
                callback_on_step_end=step_end,
            )
        steps_computed = first.steps if cache is None else cache.computed_steps
        pipeline_s = time.perf_counter() - started

        results = []
        for request, image in zip(batch, output.images):
            encode_started = time.perf_counter()
            encoded = encode_image(image, request.output_format)
            results.append(
                EngineResult(
                    image=encoded,
                    metadata={
                        "seed": request.seed,
                        "width": image.width,
                        "height": image.height,
                        "steps": request.steps,
                        "guidance": request.guidance,
                        "output_format": request.output_format,
                        "mode": "edit" if request.image is not None else "text-to-image",
                        "batch_size": len(batch),
                        "cache_threshold": threshold,
                        "steps_computed": steps_computed,
                        "steps_skipped": request.steps - steps_computed,
                        "timings_ms": {
                            "pipeline": round(pipeline_s * 1e3, 2),
                            "encode": round((time.perf_counter() - encode_started) * 1e3, 2),
                        },
                    },
                )
            )
        return results

    def _with_defaults(self, request: EditRequest) -> EditRequest:
        """The request with the server's default cache threshold where it gave none (for batch keys)."""
        if request.cache_threshold is not None:
            return request
        return dataclasses.replace(request, cache_threshold=self.settings.cache_threshold)

    @staticmethod
    def _cache_context(threshold: float):
        """A First Block Cache context per pipeline call (fresh residuals, per-call step counts); none
        for threshold 0, so the transformer runs every block of every step."""
        if threshold > 0:
            from .first_block_cache import cache_context

            return cache_context(threshold)
        return contextlib.nullcontext()


def warmup_requests(spec: str, steps: int) -> list[EditRequest]:
    """Parses "1024x1024:edit,512x512:text" into one request per shape."""
    requests = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        size, _, mode = item.partition(":")
        width, _, height = size.partition("x")
        if mode not in ("edit", "text") or not width.isdigit() or not height.isdigit():
            raise ValueError(f"warmup_shapes: {item!r} is not WIDTHxHEIGHT:edit or WIDTHxHEIGHT:text")
        width, height = int(width), int(height)
        image = Image.new("RGB", (width, height), (128, 128, 128)) if mode == "edit" else None
        requests.append(EditRequest("warm-up", image, 0, steps, contract.DEFAULT_GUIDANCE, width, height, "png"))
    return requests
