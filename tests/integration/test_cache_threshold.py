"""A per-request speed/quality choice: the optional `cache_threshold` input over gRPC, HTTP and the CLI.

On the embedded tiny model a threshold of 0.5 skips most steps (0.08 and 0.12 skip none: hit rates
depend on the weights); absent means the profile's default (cpu-smoke: 0, exact)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tests.integration.helpers import infer, png

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_request_threshold_skips_steps_and_reports_them(server, protocol):
    _, exact = infer(server, protocol, prompt=b"x", image=png(64, 64), steps=8, seed=4)
    _, fast = infer(server, protocol, prompt=b"x", image=png(64, 64), steps=8, seed=4, cache_threshold=0.5)
    assert (exact["cache_threshold"], exact["steps_computed"], exact["steps_skipped"]) == (0.0, 8, 0)
    assert fast["cache_threshold"] == 0.5 and fast["steps_skipped"] > 0
    assert fast["steps_computed"] + fast["steps_skipped"] == 8


@pytest.mark.parametrize("value", [-0.1, 0.6, math.nan, math.inf])
def test_an_out_of_range_threshold_is_invalid_arg_naming_it(server, value):
    with pytest.raises(InferenceServerException) as info:
        infer(server, prompt=b"x", steps=1, width=64, height=64, cache_threshold=value)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "'cache_threshold'" in info.value.message()


def test_a_threshold_of_the_wrong_dtype_is_rejected_naming_it(server):
    with pytest.raises(InferenceServerException) as info:
        infer(server, dtypes={"cache_threshold": "INT32"}, prompt=b"x", steps=1,
              cache_threshold=np.array([[1]], dtype=np.int32))
    assert "cache_threshold" in info.value.message()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kontext_client.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("flags, threshold", [(["--quality", "fast"], 0.12), (["--quality", "exact"], 0.0),
                                               (["--cache-threshold", "0.5"], 0.5)])
def test_the_cli_sends_the_chosen_quality(server, tmp_path, flags, threshold):
    out = tmp_path / "out.png"
    done = run_cli("generate", "x", "-o", str(out), "--url", server.grpc_url, "--width", "64", "--height", "64",
                   "--steps", "8", *flags)
    assert done.returncode == 0, done.stderr
    metadata = json.loads(done.stdout)
    assert metadata["cache_threshold"] == pytest.approx(threshold)
    assert (metadata["steps_skipped"] > 0) == (threshold == 0.5)
