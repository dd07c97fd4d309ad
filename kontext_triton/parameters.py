"""config.pbtxt parameters that the Triton adapter reads itself; every other one is an engine setting."""

# How long the server lets one request compute once the model has taken it (seconds); a client's own
# Triton timeout, when shorter, wins. Bounds what abandoned requests (an HTTP client that gave up
# cannot be noticed by Triton 2.51) can hold.
SERVING_PARAMETERS = {"request_timeout_s": "300"}


def split_parameters(parameters: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(serving options with defaults filled in, engine settings)."""
    serving = {key: parameters.get(key, default) for key, default in SERVING_PARAMETERS.items()}
    engine = {key: value for key, value in parameters.items() if key not in SERVING_PARAMETERS}
    return serving, engine
