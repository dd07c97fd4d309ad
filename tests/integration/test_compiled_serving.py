"""torch.compile inside the backend stub: the gpu-bf16 profile (fused QKV, regional compile, compiled
NHWC VAE) warms up compiled with batching, saves its compile artifacts, and serves the warmed size and a
new one."""

import re

import pytest

from kontext_triton.server.repository import write_repository
from tests.integration.conftest import running_server
from tests.integration.helpers import infer, png

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def compiled_server(tmp_path_factory, request):
    scratch = tmp_path_factory.mktemp("compiled")
    parameters = {"profile": "gpu-bf16", "warmup_shapes": "64x64:edit", "compile_cache_dir": str(scratch / "artifacts")}

    def batch_of_two(config):
        config.max_batch_size = 2

    repository = write_repository(scratch / "model_repository", parameters, edit=batch_of_two)
    with running_server(repository, scratch, request.node) as instance:
        yield instance


def test_compiled_model_serves_the_warmed_size_and_a_new_one(compiled_server):
    log = compiled_server.log_path.read_text()
    assert "compile=regional" in log and "fuse_qkv=True" in log  # the start-up line: the profile was applied
    saved = re.search(r"compile artifacts saved: (\d+) bytes", log)
    assert saved and int(saved.group(1)) > 0  # torch.compile did compile in the stub (not silently skipped)
    for width, height in ((64, 64), (96, 64)):
        image, meta = infer(compiled_server, prompt=b"make it snowy", image=png(80, 80), width=width, height=height,
                            steps=2)
        assert image.size == (width, height) and meta["steps"] == 2
