"""The request contract: tensor names, dtypes, defaults and limits.

This module is the single source of truth. `model_repository/*/config.pbtxt`, `model.py` and the
client repeat only the names and dtypes; `tests/unit/test_contract.py` proves they agree.

Every tensor carries Triton's batch dimension plus one element (dims: [1]).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton dtype name as used by tritonclient ("BYTES", "INT64", ...)
    optional: bool
    doc: str


# Inputs
PROMPT = TensorSpec("prompt", "BYTES", False, "UTF-8 instruction, e.g. 'make it snowy'")
IMAGE = TensorSpec("image", "BYTES", True, "encoded PNG/JPEG/WebP; absent means text-to-image")
SEED = TensorSpec("seed", "INT64", True, "0..2^63-1; absent means a random seed (reported)")
STEPS = TensorSpec("steps", "INT32", True, "denoising steps")
GUIDANCE = TensorSpec("guidance", "FP32", True, "distilled guidance scale")
WIDTH = TensorSpec("width", "INT32", True, "output width in pixels, a multiple of 16")
HEIGHT = TensorSpec("height", "INT32", True, "output height in pixels, a multiple of 16")
OUTPUT_FORMAT = TensorSpec("output_format", "BYTES", True, "png, jpeg or webp")
CACHE_THRESHOLD = TensorSpec("cache_threshold", "FP32", True,
                             "First Block Cache threshold: 0 = exact, larger = faster; absent = the server's default")

INPUTS = (PROMPT, IMAGE, SEED, STEPS, GUIDANCE, WIDTH, HEIGHT, OUTPUT_FORMAT, CACHE_THRESHOLD)

# Outputs
OUTPUT_IMAGE = TensorSpec("output_image", "BYTES", False, "the encoded result image")
METADATA = TensorSpec("metadata", "BYTES", False,
                      "JSON: seed, size, steps, guidance, cache_threshold, steps_computed, steps_skipped, timings")

OUTPUTS = (OUTPUT_IMAGE, METADATA)

# The streaming model (flux_kontext_stream) sends one `event` per response: a JSON object with
# "type" "progress" (step, steps, elapsed_s, eta_s) or "result"; the result response also carries
# OUTPUTS. Errors end the stream with an error response. Requests the unary model forwards get
# "accepted" (pid) first and "error" (code, message) instead of an error response
# (kontext_triton/forwarding.py).
EVENT = TensorSpec("event", "BYTES", False, "JSON progress or result event (streaming model only)")
STREAM_OUTPUTS = (EVENT, *OUTPUTS)

# Defaults
DEFAULT_STEPS = 28
DEFAULT_GUIDANCE = 2.5  # FLUX.1-Kontext-dev's recommended value
DEFAULT_OUTPUT_FORMAT = "png"
DEFAULT_TEXT_TO_IMAGE_SIZE = 1024  # width and height when neither they nor an image are given

# Limits
SIZE_MULTIPLE = 16  # VAE downsamples by 8, the transformer packs 2x2 latent patches
MIN_SIZE = 64
MAX_SIZE = 2048
MAX_OUTPUT_PIXELS = 2048 * 2048
MIN_STEPS = 1
MAX_STEPS = 100
MIN_GUIDANCE = 0.0
MAX_GUIDANCE = 20.0
MAX_SEED = 2**63 - 1
MAX_PROMPT_BYTES = 4096
MAX_IMAGE_BYTES = 32 * 1024 * 1024
MAX_INPUT_PIXELS = 4096 * 4096  # checked from the header, before any pixel is decoded
MIN_CACHE_THRESHOLD = 0.0
MAX_CACHE_THRESHOLD = 0.5  # past ~0.3 nearly every step after the first is skipped
OUTPUT_FORMATS = ("png", "jpeg", "webp")  # case-insensitive
OUTPUT_FORMAT_ALIASES = {"jpg": "jpeg"}
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")  # PIL format names accepted for `image`
