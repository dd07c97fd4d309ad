"""The one error type the engine raises for a bad request."""


class InvalidRequest(ValueError):
    """A request field is missing, malformed or out of range. Maps to Triton's INVALID_ARG."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"invalid '{field}': {reason}")
