"""asyncio client over gRPC (default) or HTTP. Same methods as KontextClient, awaitable."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Optional, Union

from .errors import KontextError
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


class AsyncKontextClient(ClientBase):
    def __init__(
        self,
        url: Optional[str] = None,
        protocol: str = "grpc",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        model_name: str = MODEL_NAME,
    ):
        super().__init__(url, protocol, timeout_s, model_name, use_asyncio=True)
        if protocol == "grpc":
            self._client = self._module.InferenceServerClient(self.url)
        else:
            self._client = self._module.InferenceServerClient(self.url, conn_timeout=timeout_s)

    async def edit(self, image: ImageInput, prompt: str, *, time_limit_s: Optional[float] = None,
                   **options) -> EditResult:
        """As KontextClient.edit. Cancelling the awaiting task cancels the server's work (gRPC)."""
        return await self._infer(request_values(prompt, image, **options), time_limit_s)

    async def generate(self, prompt: str, *, time_limit_s: Optional[float] = None, **options) -> EditResult:
        return await self._infer(request_values(prompt, None, **options), time_limit_s)

    def stream_edit(self, image: ImageInput, prompt: str, **options) -> AsyncIterator[Union[Progress, EditResult]]:
        """As KontextClient.stream_edit, as an async iterator. Closing it cancels the server's work: wrap it in
        `contextlib.aclosing(...)` so that leaving the loop closes it at once, not at garbage collection."""
        return self._stream(request_values(prompt, image, **options))

    def stream_generate(self, prompt: str, **options) -> AsyncIterator[Union[Progress, EditResult]]:
        return self._stream(request_values(prompt, None, **options))

    async def _stream(self, arrays) -> AsyncIterator[Union[Progress, EditResult]]:
        if self.protocol != "grpc":
            raise ValueError("streaming needs protocol='grpc'")
        outputs = [self._module.InferRequestedOutput(name) for name in STREAM_OUTPUT_NAMES]

        async def one_request():
            yield {"model_name": STREAM_MODEL_NAME, "inputs": build_inputs(self._module, arrays), "outputs": outputs}

        responses = self._client.stream_infer(one_request(), stream_timeout=self.timeout_s)
        try:
            async for result, error in responses:
                if error is not None:
                    raise translate_error(error)
                event = parse_stream_event(result)
                yield event
                if isinstance(event, EditResult):
                    return
            raise KontextError("the stream ended without a result")
        except KontextError:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc
        finally:
            responses.cancel()  # a no-op after the result; otherwise stops the server's work

    async def is_ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self.model_name))
        except Exception:
            return False

    async def _infer(self, arrays, time_limit_s: Optional[float]) -> EditResult:
        inputs, keywords = self._infer_arguments(arrays, time_limit_s)
        started = time.monotonic()
        while True:
            try:
                attempt = self._attempt_keywords(keywords, started)
                return parse_result(await self._client.infer(self.model_name, inputs, **attempt))
            except Exception as exc:
                error = translate_error(exc)
                delay = self._retry_delay(error, started)
                if delay is None:
                    raise error from exc
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncKontextClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
