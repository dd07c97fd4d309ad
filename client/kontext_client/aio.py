"""asyncio client over gRPC (default) or HTTP. Same methods as KontextClient, awaitable."""

from __future__ import annotations

from typing import Optional

from .protocol import (
    DEFAULT_TIMEOUT_S,
    MODEL_NAME,
    ClientBase,
    EditResult,
    ImageInput,
    parse_result,
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
        inputs, keywords = self._infer_arguments(arrays, priority, queue_timeout_s)
        try:
            result = await self._client.infer(self.model_name, inputs, **keywords)
        except Exception as exc:
            raise translate_error(exc) from exc
        return parse_result(result)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncKontextClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
