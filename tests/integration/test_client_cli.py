"""Our client package (sync, asyncio) and CLI against the real server."""

import asyncio
import json
import subprocess
import sys

import pytest
from PIL import Image

from kontext_client import AsyncKontextClient, InvalidRequestError, KontextClient, ServerUnavailableError
from kontext_triton.server.process import free_ports
from tests.integration.helpers import png

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_edit_and_generate(server, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with KontextClient(url, protocol) as client:
        assert client.is_ready()
        edited = client.edit(Image.new("RGB", (100, 70), "red"), "make it snowy", width=80, height=64, steps=2, seed=9)
        generated = client.generate("a cat", width=64, height=96, steps=2, output_format="jpeg")
    assert edited.image.size == (80, 64) and edited.metadata["seed"] == 9
    assert generated.image.size == (64, 96) and generated.image.format == "JPEG"


def test_client_raises_typed_error_with_server_message(server):
    with KontextClient(server.grpc_url) as client, pytest.raises(InvalidRequestError, match="'width'"):
        client.generate("x", width=100, height=64, steps=1)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_client_runs_requests_concurrently(server, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url

    async def run():
        async with AsyncKontextClient(url, protocol) as client:
            return await asyncio.gather(*(client.edit(png(), "x", seed=s, steps=2) for s in (1, 2, 3)))

    results = asyncio.run(run())
    assert [r.metadata["seed"] for r in results] == [1, 2, 3]


def test_client_reports_a_server_that_is_down():
    (port,) = free_ports(1)
    with KontextClient(f"127.0.0.1:{port}", timeout_s=5) as client, pytest.raises(ServerUnavailableError):
        client.generate("x", steps=1)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kontext_client.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_edit_writes_image_of_requested_size(server, tmp_path):
    source = tmp_path / "in.png"
    Image.new("RGB", (300, 200), "blue").save(source)
    out = tmp_path / "out.webp"
    done = run_cli("edit", str(source), "make it snowy", "-o", str(out), "--url", server.grpc_url,
                   "--width", "144", "--height", "96", "--steps", "2", "--seed", "5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["seed"] == 5
    written = Image.open(out)
    assert written.size == (144, 96) and written.format == "WEBP"


def test_cli_generate_over_http(server, tmp_path):
    out = tmp_path / "gen.png"
    done = run_cli("generate", "a cat", "-o", str(out), "--protocol", "http", "--url", server.http_url,
                   "--width", "64", "--height", "64", "--steps", "1")
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (64, 64)


def test_cli_says_clearly_when_server_is_down(tmp_path):
    (port,) = free_ports(1)
    done = run_cli("generate", "x", "-o", str(tmp_path / "o.png"), "--url", f"127.0.0.1:{port}")
    assert done.returncode == 3
    assert "server unavailable" in done.stderr
    assert not (tmp_path / "o.png").exists()


def test_cli_reports_invalid_input_with_the_field(server, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    done = run_cli("edit", str(bad), "x", "-o", str(tmp_path / "o.png"), "--url", server.grpc_url)
    assert done.returncode == 1
    assert "'image'" in done.stderr
