"""config.pbtxt parameters that the Triton adapter reads itself; every other one is an engine setting."""

from typing import Mapping

# How long the server lets one request compute once the model has taken it (seconds); a client's own
# Triton timeout, when shorter, wins. Bounds what abandoned requests (an HTTP client that gave up
# cannot be noticed by Triton 2.51) can hold.
SERVING_PARAMETERS = {"request_timeout_s": "300"}


ENV_PREFIX = "KONTEXT_SETTING_"  # as for engine settings: KONTEXT_SETTING_REQUEST_TIMEOUT_S overrides


def split_parameters(parameters: Mapping[str, str], environ: Mapping[str, str] = {}) -> tuple[dict, dict]:
    """(serving options, defaults filled in and environment overrides applied; engine settings)."""
    serving = {key: environ.get(ENV_PREFIX + key.upper(), parameters.get(key, default))
               for key, default in SERVING_PARAMETERS.items()}
    engine = {key: value for key, value in parameters.items() if key not in SERVING_PARAMETERS}
    return serving, engine


def request_timeout_s(serving: Mapping[str, str]) -> float:
    """The validated request_timeout_s; a bad value fails start-up naming it."""
    try:
        value = float(serving["request_timeout_s"])
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"parameter 'request_timeout_s': must be a positive number of seconds, "
                         f"got {serving['request_timeout_s']!r}")
    return value
