"""asyncio client over gRPC (default) or HTTP. Same methods as KontextClient, awaitable."""

from __future__ import annotations

from typing import Optional

from .client import DEFAULT_TIMEOUT_S, DEFAULT_URLS
from .errors import KontextError
from .protocol import (
    MODEL_NAME,
    OUTPUT_NAMES,
    EditResult,
    ImageInput,
    build_inputs,
    parse_result,
    queue_options,
    request_values,
    translate_error,
)


def _transport(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc.aio as module
    elif protocol == "http":
        import tritonclient.http.aio as module
    else:
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    return module


class AsyncKontextClient:
    def __init__(
        self,
        url: Optional[str] = None,
        protocol: str = "grpc",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        model_name: str = MODEL_NAME,
    ):
        self._module = _transport(protocol)
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.timeout_s = timeout_s
        self.model_name = model_name
        if protocol == "grpc":
            self._client = self._module.InferenceServerClient(self.url)
        else:
            self._client = self._module.InferenceServerClient(self.url, conn_timeout=timeout_s)

    async def edit(self, image: ImageInput, prompt: str, *, priority: int = 0,
                   queue_timeout_s: Optional[float] = None, **options) -> EditResult:
        """As KontextClient.edit. Cancelling the awaiting task cancels the server's work (gRPC)."""
        return await self._infer(request_values(prompt, image, **options), priority, queue_timeout_s)

    async def generate(self, prompt: str, *, priority: int = 0, queue_timeout_s: Optional[float] = None,
                       **options) -> EditResult:
        return await self._infer(request_values(prompt, None, **options), priority, queue_timeout_s)

    async def is_ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self.model_name))
        except Exception:
            return False

    async def _infer(self, arrays, priority: int, queue_timeout_s: Optional[float]) -> EditResult:
        outputs = [self._module.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        kwargs.update(queue_options(priority, queue_timeout_s))
        try:
            result = await self._client.infer(
                self.model_name, build_inputs(self._module, arrays), outputs=outputs, **kwargs
            )
        except KontextError:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc
        return parse_result(result)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncKontextClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
