"""The engine: runs validated requests through a FluxKontextPipeline. Knows nothing of Triton."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from .batching import group_compatible
from .codecs import encode_image
from .loading import describe_source, load_pipeline, resolve_dtype
from .schema import EditRequest
from .settings import EngineSettings

log = logging.getLogger(__name__)

# Called after every denoising step of a batch with (steps_done, steps_total); the hook for
# progress streaming, cancellation and per-step metrics.
StepCallback = Callable[[int, int], None]


@dataclass
class EditResult:
    image: bytes
    metadata: dict = field(default_factory=dict)


class KontextEngine:
    def __init__(self, pipeline, device: torch.device, source: str, max_batch_size: int = 1):
        self.pipeline = pipeline
        self.device = device
        self.source = source
        self.max_batch_size = max_batch_size

    @classmethod
    def load(
        cls,
        settings: EngineSettings = EngineSettings(),
        device: torch.device = torch.device("cpu"),
        max_batch_size: int = 1,
        cache_dir: Optional[Path] = None,
    ) -> "KontextEngine":
        pipeline = load_pipeline(settings.model_source, device, resolve_dtype(settings.dtype, device), cache_dir)
        return cls(pipeline, device, settings.model_source, max_batch_size)

    def describe(self) -> str:
        dtype = self.pipeline.transformer.dtype
        return f"model={describe_source(self.source)} device={self.device} dtype={dtype} max_batch={self.max_batch_size}"

    def run(
        self, requests: Sequence[EditRequest], on_step: Optional[StepCallback] = None
    ) -> list[Union[EditResult, Exception]]:
        """Runs every request; compatible ones share a pipeline call.

        Returns one entry per request, in order: its result, or the exception that failed its
        batch (a failing batch never affects another).
        """
        outcomes: list[Union[EditResult, Exception]] = [None] * len(requests)  # type: ignore[list-item]
        for group in group_compatible(requests, lambda r: r.batch_key, self.max_batch_size):
            batch = [requests[i] for i in group]
            try:
                results = self.generate(batch, on_step)
            except Exception as exc:  # one failing batch must not take the others down
                log.exception("batch of %d failed", len(batch))
                results = [exc] * len(batch)
            for index, result in zip(group, results):
                outcomes[index] = result
        return outcomes

    @torch.inference_mode()
    def generate(self, batch: Sequence[EditRequest], on_step: Optional[StepCallback] = None) -> list[EditResult]:
        """One pipeline call for requests that share size, steps, guidance and image presence."""
        first = batch[0]
        if any(r.batch_key != first.batch_key for r in batch):
            raise ValueError("generate() needs requests with equal batch_key")

        def step_end(pipeline, step_index, timestep, callback_kwargs):
            if on_step is not None:
                on_step(step_index + 1, first.steps)
            return callback_kwargs

        started = time.perf_counter()
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
        pipeline_s = time.perf_counter() - started

        results = []
        for request, image in zip(batch, output.images):
            encode_started = time.perf_counter()
            encoded = encode_image(image, request.output_format)
            results.append(
                EditResult(
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
                        "timings_ms": {
                            "pipeline": round(pipeline_s * 1e3, 2),
                            "encode": round((time.perf_counter() - encode_started) * 1e3, 2),
                        },
                    },
                )
            )
        return results
