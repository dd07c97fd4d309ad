"""One real tritonserver per test module, on free loopback ports, killed in teardown."""

import pytest

from kontext_engine.launcher import DEFAULT_MODEL_REPOSITORY, TritonServer, free_ports


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = tmp_path_factory.mktemp("triton") / "server.log"
    instance = TritonServer(
        DEFAULT_MODEL_REPOSITORY,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_path=log_path,
    )
    try:
        instance.start(timeout_s=300)
        yield instance
    finally:
        instance.stop()
        if getattr(request.node, "kontext_failed", False) and log_path.exists():
            print(f"\n----- tritonserver log ({log_path}) -----\n{log_path.read_text()[-20000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        item.getparent(pytest.Module).kontext_failed = True  # the server fixture prints its log
