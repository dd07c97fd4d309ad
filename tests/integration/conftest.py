"""One real tritonserver per test module, on free loopback ports, supervised as kontext-serve
supervises it (stub watchdog included), stopped in teardown, where a stub that crashed fails the module."""

import contextlib
import threading

import pytest

from kontext_triton.server.process import DEFAULT_MODEL_REPOSITORY, TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from kontext_triton.server.supervisor import RestartPolicy, Supervisor


@contextlib.contextmanager
def running_supervisor(repository, log_dir, node, watchdog=True, **server_options):
    """A supervisor whose server is ready; the server log is printed at teardown if a test of `node` failed."""
    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = log_dir / "server.log"
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          log_path=log_path, **server_options)
    ready = threading.Event()
    supervisor = Supervisor(server, RestartPolicy("exit"), ready_timeout_s=300, watchdog=watchdog,
                            on_ready=lambda _: ready.set())
    thread = threading.Thread(target=supervisor.run, name="supervisor", daemon=True)
    thread.start()
    try:
        while not ready.wait(0.2):
            if not thread.is_alive():
                raise RuntimeError(f"tritonserver did not start; log:\n{log_path.read_text()[-5000:]}")
        yield supervisor
    finally:
        supervisor.request_stop()
        thread.join(server.exit_timeout_s + 30)
        server.stop()
        if getattr(node, "kontext_failed", False) and log_path.exists():
            print(f"\n----- tritonserver log ({log_path}) -----\n{log_path.read_text()[-20000:]}")
    # Every stub enables faulthandler: a stub that crashed, serving or exiting, left its stacks in the log.
    log = log_path.read_text() if log_path.exists() else ""
    first = log.find("Fatal Python error")
    assert first < 0, f"{log.count('Fatal Python error')} stub crash(es) in {log_path}:\n{log[first:first + 3000]}"


@contextlib.contextmanager
def running_server(repository, log_dir, node, **server_options):
    with running_supervisor(repository, log_dir, node, **server_options) as supervisor:
        yield supervisor.server


SMALL_QUEUE_SIZE = 2


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory, request):
    """One request at a time (max_batch_size 1) and room for SMALL_QUEUE_SIZE more in the queue, in both models."""

    def edit(config):
        config.max_batch_size = 1
        config.dynamic_batching.default_queue_policy.max_queue_size = SMALL_QUEUE_SIZE

    scratch = tmp_path_factory.mktemp("small-queue")
    repository = write_repository(scratch / "model_repository", edit=edit)
    with running_server(repository, scratch, request.node) as instance:
        yield instance


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    with running_server(DEFAULT_MODEL_REPOSITORY, tmp_path_factory.mktemp("triton"), request.node) as instance:
        yield instance


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        item.getparent(pytest.Module).kontext_failed = True  # the server fixture prints its log
