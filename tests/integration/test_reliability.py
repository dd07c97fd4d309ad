"""Bounded load, fuzz and memory runs against the real server (loopback only).

Figures are printed (run pytest with -s to see them) and quoted in the README.
"""

import random
import struct
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from kontext_client import InvalidRequestError, KontextClient, RequestTimeoutError, ServerUnavailableError
from kontext_triton.server.watchdog import stub_processes
from tests.integration.helpers import infer, png

pytestmark = pytest.mark.integration


def stub_rss_mib(server, model="flux_kontext_stream") -> float:
    (pid,) = stub_processes(server.model_repository)[model]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_mixed_load_valid_invalid_and_cancelled(server):
    """32 clients, 96 requests: 5/8 valid, 2/8 invalid, 1/8 abandoned by a 0.3 s client timeout. A full
    queue answers UNAVAILABLE at once and the client sends again after 0.2 s; in the end every request
    gets its own right answer, none hangs, none is INTERNAL."""
    requests, workers, deadline_s = 96, 32, 300
    rng = random.Random(7)
    sizes = [rng.choice([64, 96, 128]) for _ in range(requests)]

    rejections = []

    def one(i):
        while True:
            outcome = attempt(i)
            if outcome != "rejected":
                return outcome
            rejections.append(i)
            time.sleep(0.2)

    def attempt(i):
        kind = (("valid",) * 5 + ("invalid",) * 2 + ("cancel",))[i % 8]
        size = sizes[i]
        try:
            if kind == "valid":
                with KontextClient(server.grpc_url) as client:
                    result = client.edit(png(size, size), "make it snowy", width=size, height=size, steps=3, seed=i)
                assert result.image.size == (size, size) and result.metadata["seed"] == i
                return "ok"
            if kind == "invalid":
                with KontextClient(server.grpc_url) as client:
                    client.edit(b"not an image" * i, "x", steps=3)
                raise AssertionError("an invalid request succeeded")
            with KontextClient(server.grpc_url, timeout_s=0.3) as client:
                client.edit(png(512, 512), "x", width=512, height=512, steps=30)
            return "cancel-too-late"  # finished within the timeout: allowed, but counted
        except InvalidRequestError:
            assert kind == "invalid"
            return "INVALID_ARG"
        except RequestTimeoutError:
            assert kind == "cancel"
            return "cancelled"
        except ServerUnavailableError as exc:
            assert "exceeds maximum queue size" in str(exc).lower()
            return "rejected"

    with KontextClient(server.grpc_url) as client:
        client.edit(png(64, 64), "warm-up", width=64, height=64, steps=1)
    rss_before = stub_rss_mib(server)
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, i) for i in range(requests)]
        done, pending = wait(futures, timeout=deadline_s)
    elapsed = time.monotonic() - started
    assert not pending, f"{len(pending)} requests hung"
    outcomes = [f.result() for f in futures]  # re-raises any unexpected failure (INTERNAL included)
    rss_after = stub_rss_mib(server)
    counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    print(f"\nload run: {requests} requests, {workers} concurrent clients, {elapsed:.1f} s, outcomes {counts}, "
          f"{len(rejections)} queue-full rejections sent again, hung 0, stub RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    assert counts["ok"] == 60 and counts["INVALID_ARG"] == 24
    assert rss_after - rss_before < 300  # bounded: no per-request leak of images or pipelines
    with KontextClient(server.grpc_url) as client:  # still serving
        assert client.generate("x", width=64, height=64, steps=1).image.size == (64, 64)


def fuzz_cases(rng: random.Random, count: int):
    """(description, raw tensors, dtype overrides) for malformed requests."""
    real = png(32, 32)
    for i in range(count):
        choice = i % 8
        if choice == 0:
            yield "random bytes as image", {"prompt": b"x", "image": rng.randbytes(rng.randint(1, 4000))}, {}
        elif choice == 1:
            cut = rng.randint(8, len(real) - 1)
            yield "truncated png", {"prompt": b"x", "image": real[:cut]}, {}
        elif choice == 2:
            header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 60000, 60000)
            yield "png header claiming 60000x60000", {"prompt": b"x", "image": header + rng.randbytes(64)}, {}
        elif choice == 3:
            value = rng.choice([-(2**31), -16, 0, 2**31 - 1, 65536])
            yield f"width {value}", {"prompt": b"x", "width": value, "height": 64}, {}
        elif choice == 4:
            yield "steps as FP32", {"prompt": b"x", "steps": np.array([[3.0]], dtype=np.float32)}, {"steps": "FP32"}
        elif choice == 5:
            yield "prompt as INT32", {"prompt": np.array([[7]], dtype=np.int32)}, {"prompt": "INT32"}
        elif choice == 6:
            yield "two prompts in one request", {"prompt": np.array([[b"a", b"b"]], dtype=np.object_)}, {}
        else:
            yield "random bytes as prompt", {"prompt": rng.randbytes(rng.randint(0, 64)), "steps": 1}, {}


def test_fuzzed_inputs_get_invalid_arg_and_never_break_the_server(server):
    rng = random.Random(1234)
    statuses = {}
    for description, values, dtypes in fuzz_cases(rng, 80):
        try:
            infer(server, dtypes=dtypes, **{"steps": 1, **values})
            status = "ok"
        except InferenceServerException as exc:
            status = exc.status()
        statuses.setdefault(status, []).append(description)
    print(f"\nfuzz run: 80 malformed requests -> { {k: len(v) for k, v in statuses.items()} }")
    assert set(statuses) <= {"StatusCode.INVALID_ARGUMENT", "ok"}, statuses
    # Accepted only where the input is in fact usable: random bytes that happen to be UTF-8, or a PNG
    # cut inside its trailing IEND marker (every pixel is there).
    assert set(statuses.get("ok", [])) <= {"random bytes as prompt", "truncated png"}
    image, _ = infer(server, prompt=b"x", image=png(), steps=1)
    assert image.size == (96, 64)
