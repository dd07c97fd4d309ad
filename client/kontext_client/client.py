"""Synchronous client over gRPC (default) or HTTP."""

from __future__ import annotations

import queue
import time
from typing import Iterator, Optional, Union

from .errors import KontextError, RequestTimeoutError
from .protocol import (
    DEFAULT_TIMEOUT_S,
    MODEL_NAME,
    STREAM_MODEL_NAME,
    STREAM_OUTPUT_NAMES,
    ClientBase,
    EditResult,
    ImageInput,
    Progress,
    build_inputs,
    parse_result,
    parse_stream_event,
    request_values,
    translate_error,
)


class KontextClient(ClientBase):
    """Edits and generates images with the flux_kontext model.

    >>> client = KontextClient("127.0.0.1:8001")
    >>> result = client.edit("in.png", "make it snowy", seed=7)
    >>> result.image.save("out.png"); result.metadata["seed"]
    """

    def __init__(
        self,
        url: Optional[str] = None,
        protocol: str = "grpc",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        model_name: str = MODEL_NAME,
    ):
        super().__init__(url, protocol, timeout_s, model_name, use_asyncio=False)
        if protocol == "grpc":
            self._client = self._module.InferenceServerClient(self.url)
        else:
            self._client = self._module.InferenceServerClient(
                self.url, connection_timeout=min(timeout_s, 10.0), network_timeout=timeout_s
            )

    def edit(self, image: ImageInput, prompt: str, *, time_limit_s: Optional[float] = None, **options) -> EditResult:
        """Edits `image` (PIL image, encoded bytes or a path) as `prompt` says.

        Options: seed, steps, guidance, width, height, output_format, cache_threshold (0 = exact; larger
        skips more steps; QUALITY_THRESHOLDS has presets). Width and height default to the input's size
        (multiple of 16); the result has exactly the size asked for.
        time_limit_s: the server rejects the request (UNAVAILABLE) if it is still queued after this
        long, and stops it if it computes longer (default: this client's timeout_s).
        """
        return self._infer(request_values(prompt, image, **options), time_limit_s)

    def generate(self, prompt: str, *, time_limit_s: Optional[float] = None, **options) -> EditResult:
        """Text-to-image. Options as for edit(); size defaults to 1024x1024."""
        return self._infer(request_values(prompt, None, **options), time_limit_s)

    def stream_edit(self, image: ImageInput, prompt: str, **options) -> Iterator[Union[Progress, EditResult]]:
        """Like edit(), through the streaming model (gRPC): yields Progress events, then the EditResult.

        Leaving the loop early (break, an exception, closing the iterator) cancels the server's work.
        """
        return self._stream(request_values(prompt, image, **options))

    def stream_generate(self, prompt: str, **options) -> Iterator[Union[Progress, EditResult]]:
        return self._stream(request_values(prompt, None, **options))

    def _stream(self, arrays) -> Iterator[Union[Progress, EditResult]]:
        if self.protocol != "grpc":
            raise ValueError("streaming needs protocol='grpc'")
        events: queue.Queue = queue.Queue()
        client = self._module.InferenceServerClient(self.url)  # one stream per call
        try:
            client.start_stream(callback=lambda result, error: events.put((result, error)))
            outputs = [self._module.InferRequestedOutput(name) for name in STREAM_OUTPUT_NAMES]
            client.async_stream_infer(STREAM_MODEL_NAME, build_inputs(self._module, arrays), outputs=outputs)
            while True:
                try:
                    result, error = events.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise RequestTimeoutError(f"no event from the server within {self.timeout_s} s") from None
                if error is not None:
                    raise translate_error(error)
                event = parse_stream_event(result)
                yield event
                if isinstance(event, EditResult):
                    return
        except KontextError:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc
        finally:
            client.stop_stream(cancel_requests=True)
            client.close()

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.model_name))
        except Exception:
            return False

    def _infer(self, arrays, time_limit_s: Optional[float]) -> EditResult:
        inputs, keywords = self._infer_arguments(arrays, time_limit_s)
        started = time.monotonic()
        while True:
            try:
                attempt = self._attempt_keywords(keywords, started)
                return parse_result(self._client.infer(self.model_name, inputs, **attempt))
            except Exception as exc:
                error = translate_error(exc)
                delay = self._retry_delay(error, started)
                if delay is None:
                    raise error from exc
            time.sleep(delay)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "KontextClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
