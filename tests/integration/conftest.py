"""One real tritonserver per test module, on free loopback ports, killed in teardown."""

import contextlib

import pytest

from kontext_engine.launcher import DEFAULT_MODEL_REPOSITORY, TritonServer, free_ports


@contextlib.contextmanager
def running_server(repository, log_dir, node):
    """A started server; its log is printed at teardown if a test of `node` failed."""
    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = log_dir / "server.log"
    instance = TritonServer(
        repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=log_path
    )
    try:
        instance.start(timeout_s=300)
        yield instance
    finally:
        instance.stop()
        if getattr(node, "kontext_failed", False) and log_path.exists():
            print(f"\n----- tritonserver log ({log_path}) -----\n{log_path.read_text()[-20000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    with running_server(DEFAULT_MODEL_REPOSITORY, tmp_path_factory.mktemp("triton"), request.node) as instance:
        yield instance


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        item.getparent(pytest.Module).kontext_failed = True  # the server fixture prints its log
