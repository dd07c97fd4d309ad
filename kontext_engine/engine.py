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
from .errors import InvalidRequest
from .context_parallel import HEARTBEAT_INTERVAL_S, ContextParallelGroup, FailureCallback, GroupBroken, worker_arguments
from .loading import default_cache_dir, describe_source, ensure_local_source, load_pipeline, resolve_dtype
from .optimizations import (
    UnsupportedOption,
    apply_optimizations,
    compile_cache_key,
    compile_seconds,
    compile_counts,
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


# How long a failed call of a context-parallel group waits to learn whether a worker broke it.
GROUP_VERDICT_S = 3 * HEARTBEAT_INTERVAL_S


class Cancelled(Exception):
    """Every request of a batch was cancelled, so its denoising stopped early."""


@dataclass
class EngineResult:
    """One request's outcome: the encoded image (bytes, as the client receives them) and its metadata."""

    image: bytes
    metadata: dict = field(default_factory=dict)


class KontextEngine:
    def __init__(self, pipeline, device: torch.device, settings: EngineSettings, max_batch_size: int = 1,
                 group: Optional[ContextParallelGroup] = None):
        self.pipeline = pipeline
        self.device = device
        self.settings = settings
        self.max_batch_size = max_batch_size
        self.group = group  # None: this process alone runs every pipeline call
        self.loaded_artifacts: frozenset = frozenset()  # keys of the compile artifacts build() loaded
        # torch.compile's accounting before this engine compiled anything (a Dynamo cache hit comes at
        # compile time, in build(); the rest at the warm-up's first calls)
        self.compile_before = compile_seconds(), compile_counts()

    @classmethod
    def load(
        cls,
        settings: EngineSettings = EngineSettings(),
        device: torch.device = torch.device("cpu"),
        max_batch_size: int = 1,
        cache_dir: Optional[Path] = None,
        worker_devices: Sequence[torch.device] = (),
        on_group_failure: Optional[FailureCallback] = None,
    ) -> "KontextEngine":
        """Loads, optimizes and warms up a pipeline; the engine is ready to serve on return.

        With settings.context_parallel = N > 1 this process is rank 0 of a group that also runs one
        worker process on each of the N - 1 worker_devices (context_parallel.py); on_group_failure
        hears if the group breaks.
        """
        validate(settings, device)  # refuse impossible settings before loading gigabytes
        if len(worker_devices) != settings.context_parallel - 1:
            raise UnsupportedOption(f"context_parallel={settings.context_parallel} needs "
                                    f"{settings.context_parallel - 1} worker device(s), got {len(worker_devices)}")
        cache_dir = cache_dir or default_cache_dir()
        group = None
        if worker_devices:
            ensure_local_source(settings.model_source, cache_dir)  # built once, before the workers read it
            group = ContextParallelGroup.start([device, *worker_devices],
                                               worker_arguments(settings, max_batch_size, cache_dir), on_group_failure)
        try:
            engine = cls.build(settings, device, max_batch_size, cache_dir, group)
            engine.warm_up(cache_dir)
        except BaseException:
            if group is not None:
                group.close()
            raise
        return engine

    @classmethod
    def build(cls, settings: EngineSettings, device: torch.device, max_batch_size: int, cache_dir: Path,
              group: Optional[ContextParallelGroup] = None) -> "KontextEngine":
        """Loads the pipeline and the compile artifacts of an earlier start, and optimizes the pipeline;
        no warm-up (a worker's warm-up is following rank 0's)."""
        started = time.perf_counter()
        engine = cls(load_pipeline(settings.model_source, device, resolve_dtype(settings.dtype, device), cache_dir),
                     device, settings, max_batch_size, group)
        pipeline_s = time.perf_counter() - started
        artifacts = engine.compile_artifacts(cache_dir)
        if artifacts is not None:  # here for rank 0 and a context-parallel worker alike
            engine._load_artifacts(artifacts)
        optimizing = time.perf_counter()
        apply_optimizations(engine.pipeline, settings, device, parallel=group is not None)
        log.info("pipeline loaded in %.1f s, optimizations applied in %.1f s", pipeline_s,
                 time.perf_counter() - optimizing)
        return engine

    def close(self) -> None:
        """Stops the group's workers (context parallelism); nothing to do otherwise."""
        if self.group is not None:
            self.group.close()

    def compile_artifacts(self, cache_dir: Path) -> Optional[Path]:
        """Where this engine's torch.compile artifacts persist; None when nothing is compiled or cached."""
        compiled = self.settings.compile != "none" or self.settings.compile_vae
        if not (compiled and self.settings.compile_cache):
            return None
        key = compile_cache_key(self.settings, self.device, dict(self.pipeline.transformer.config))
        return Path(self.settings.compile_cache_dir or cache_dir / "compile-artifacts") / f"{key}.bin"

    def warm_up(self, cache_dir: Path) -> None:
        """Runs each configured warm-up shape alone and, when batching is on, as a full batch (with
        static_shapes, at every batch size), reusing the compile artifacts build() loaded. So
        torch.compile builds every graph a request will need now rather than under load, and a full
        batch is proven to fit in memory."""
        requests = warmup_requests(self.settings.warmup_shapes, self.settings.warmup_steps)
        if not requests:
            return
        for request in requests:
            problem = self._unsplittable(request)
            if problem is not None:
                raise UnsupportedOption(f"warmup_shapes: {problem.reason}")
        artifacts = self.compile_artifacts(cache_dir)
        started, (compiled_before, counted_before) = time.perf_counter(), self.compile_before
        batch_sizes = self._warmup_batch_sizes(self.settings.compile != "none" or self.settings.compile_vae)
        for request in requests:
            for batch_size in batch_sizes:
                self.generate([request] * batch_size)
        compiled = {phase: s - compiled_before[phase] for phase, s in compile_seconds().items()}
        counted = {name: n - counted_before[name] for name, n in compile_counts().items()}
        log.info("warm-up of %d shape(s) at batch sizes %s took %.1f s; torch.compile since build: %s; %s", len(requests),
                 batch_sizes, time.perf_counter() - started, ", ".join(f"{p} {s:.1f} s" for p, s in compiled.items()),
                 ", ".join(f"{name} {n}" for name, n in counted.items()))
        if artifacts is not None:
            if self.group is not None:
                self.group.share(("save_artifacts",))  # each worker's compiled code is for its own GPU
            # With Dynamo's cache, a graph traced although its function's entry came from the file replaces it
            self._save_artifacts(artifacts, retraced=self.settings.dynamo_cache and counted["graphs traced"] > 0)

    @torch.inference_mode()
    def follow(self, cache_dir: Path) -> None:
        """A context-parallel worker's life: run every batch rank 0 shares (its warm-up included) in
        lockstep with it, until rank 0 says stop."""
        artifacts = self.compile_artifacts(cache_dir)
        while True:
            message = self.group.share(None)
            if message[0] == "stop":
                return
            if message[0] == "save_artifacts":
                if artifacts is not None:  # the same settings as rank 0's: always, in practice
                    self._save_artifacts(artifacts)
                continue
            try:
                self._denoise(message[1], output_type="latent")
            except Cancelled:
                pass  # rank 0 decided; every rank stopped at the same step
            # Any other failure ends this worker: rank 0 may not have failed alike, and the group
            # cannot be brought back in step. Rank 0's monitor sees the exit and the instance restarts.

    def _load_artifacts(self, path: Path) -> None:
        started = time.perf_counter()
        status, self.loaded_artifacts = load_compile_artifacts(path)
        log.info("compile artifacts %s in %.1f s: %s", status, time.perf_counter() - started, path)

    def _save_artifacts(self, path: Path, retraced: bool = False) -> None:
        written = save_compile_artifacts(path, self.loaded_artifacts, retraced)
        if written is None:
            log.info("compile artifacts unchanged (every one used came from the file): not saved again")
        else:
            log.info("compile artifacts saved: %d bytes", written)

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
        runnable = []
        for index, request in enumerate(requests):
            problem = self._unsplittable(request)
            if problem is None:
                runnable.append(index)
                continue
            outcomes[index] = problem
            if on_done is not None:
                on_done(index, problem)
        for group in group_compatible([requests[i] for i in runnable], lambda r: r.batch_key, self.max_batch_size):
            group = [runnable[i] for i in group]
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
        started = time.perf_counter()
        try:
            if self.group is not None:
                self.group.share(("generate", batch))  # the workers run this call with us
            output, steps_computed, threshold = self._denoise(batch, on_step, should_stop)
        except Cancelled:
            raise
        except Exception as exc:
            if self.group is None:
                raise
            # The group is out of step now, whoever failed first: a worker (the monitor names it,
            # give it a moment) or this rank alone.
            problem = self.group.broken(wait_s=GROUP_VERDICT_S) or f"rank 0 failed ({type(exc).__name__})"
            self.group.fail(problem)
            raise GroupBroken(problem) from exc
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

    def _denoise(self, batch, on_step=None, should_stop=None, output_type: str = "pil"):
        """The pipeline call of generate(), on every rank of a group: (output, steps computed, threshold)."""
        first = batch[0]

        def step_end(pipeline, step_index, timestep, callback_kwargs):
            if on_step is not None:
                on_step(step_index + 1, first.steps)
            stop = should_stop is not None and should_stop()
            if self.group is not None:
                stop = self.group.agree(stop)  # rank 0 decides; every rank stops at this same step
            if stop:
                raise Cancelled(f"cancelled after step {step_index + 1} of {first.steps}")
            return callback_kwargs

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
                output_type=output_type,
            )
        return output, first.steps if cache is None else cache.computed_steps, threshold

    def _unsplittable(self, request: EditRequest) -> Optional[InvalidRequest]:
        """Why a context-parallel group cannot run this request (its image sequence must divide by
        the group size; see context_parallel.enable_context_parallel), or None."""
        if self.group is None:
            return None
        tokens = (request.width // contract.SIZE_MULTIPLE) * (request.height // contract.SIZE_MULTIPLE) * (2 if request.image is not None else 1)
        if tokens % self.group.world_size == 0:
            return None
        return InvalidRequest("width", f"{request.width}x{request.height} (width x height) gives {tokens} image tokens, which do not "
                                       f"split over this server's {self.group.world_size} GPUs; use a width and "
                                       f"height that are multiples of {contract.SIZE_MULTIPLE * self.group.world_size}")

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
