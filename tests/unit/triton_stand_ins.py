"""Stand-ins for what tests without a tritonserver need of triton_python_backend_utils (it exists only
inside the backend stub)."""


class RecordingLogger:
    """pb_utils.Logger: keeps every line, so a test can check what reached the server log."""

    lines: list = []

    @classmethod
    def log_error(cls, message):
        cls.lines.append(message)

    log_warn = log_info = log_error
