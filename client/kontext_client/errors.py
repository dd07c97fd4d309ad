"""Typed errors. Each carries the server's message unchanged."""


class KontextError(Exception):
    """Base class for every error this client raises."""


class InvalidRequestError(KontextError):
    """The server rejected a field of the request (Triton INVALID_ARG)."""


class ServerUnavailableError(KontextError):
    """The server could not be reached, or rejected the request because its queue is full."""


class ModelNotReadyError(ServerUnavailableError):
    """The model is being (re)loaded; the clients retry this for a short while by themselves."""


class RequestTimeoutError(KontextError):
    """No answer within the client's timeout."""


class InferenceFailedError(KontextError):
    """The request was valid but the server failed to serve it."""
