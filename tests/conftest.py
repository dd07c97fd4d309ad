import io
import os

import pytest
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def kontext_cache_dir(tmp_path_factory):
    """One cache (tiny model, backend links) for the whole run, away from the user's home."""
    path = os.environ.get("KONTEXT_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("kontext-cache"))
    os.environ["KONTEXT_CACHE_DIR"] = path
    # The embedded default must never reach a hub; make any attempt fail loudly.
    os.environ["HF_HUB_OFFLINE"] = "1"
    return path


def png_bytes(width=96, height=64, color=(30, 120, 200), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()
