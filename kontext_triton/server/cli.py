"""kontext-serve: starts tritonserver on the model repository and keeps it serving.

Binds 127.0.0.1 unless told otherwise. Model control (load/unload, trace, logging, shared memory) is
restricted to callers that send the `kontext-admin-key` header with the operator's key: by default a
random key per start that only this process knows (its stub watchdog uses it), or the one in
--admin-key-file / $KONTEXT_ADMIN_KEY_FILE (for example a Kubernetes Secret).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .install import TritonNotFound
from .process import DEFAULT_EXIT_TIMEOUT_S, DEFAULT_MODEL_REPOSITORY, TritonServer
from .supervisor import RestartPolicy, Supervisor, install_signal_handlers


def parse_args(argv):
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for readiness")
    parser.add_argument("--exit-timeout", type=int, default=DEFAULT_EXIT_TIMEOUT_S,
                        help="seconds a shutdown waits for requests in flight (default %(default)s)")
    parser.add_argument("--model", action="append", default=[], dest="models",
                        help="load only this model (repeatable; default: all). flux_kontext forwards to "
                             "flux_kontext_stream, which holds the pipeline: load both, or the latter alone")
    parser.add_argument("--on-server-exit", choices=("restart", "exit"),
                        default=env("KONTEXT_ON_SERVER_EXIT", "restart"),
                        help="when tritonserver dies: restart it (default; bounded, with back-off) or exit "
                             "non-zero for an orchestrator to restart ($KONTEXT_ON_SERVER_EXIT)")
    parser.add_argument("--max-restarts", type=int, default=5, help="restarts allowed within 10 minutes")
    parser.add_argument("--no-watchdog", action="store_true",
                        default=env("KONTEXT_WATCHDOG", "on").lower() in ("off", "0", "false"),
                        help="do not reload models whose Python stub died ($KONTEXT_WATCHDOG=off)")
    parser.add_argument("--admin-key-file", type=Path, default=env("KONTEXT_ADMIN_KEY_FILE"),
                        help="file holding the key for model control; default: a random key per start")
    parser.add_argument("extra", nargs="*", help="further tritonserver flags, after --")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="kontext-serve: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    server = TritonServer(
        args.model_repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
        models=args.models, extra_args=args.extra, exit_timeout_s=args.exit_timeout,
    )
    if args.admin_key_file:
        server.admin_key = args.admin_key_file.read_text().strip()
        if len(server.admin_key) < 16:
            print(f"kontext-serve: the admin key in {args.admin_key_file} is shorter than 16 characters",
                  file=sys.stderr)
            return 2

    def announce(server: TritonServer) -> None:
        print(f"tritonserver ready: grpc {server.grpc_url}  http http://{server.http_url}  "
              f"metrics {server.metrics_url}", flush=True)

    supervisor = Supervisor(server, RestartPolicy(args.on_server_exit, args.max_restarts), args.ready_timeout,
                            watchdog=not args.no_watchdog, on_ready=announce)
    install_signal_handlers(supervisor)
    try:
        return supervisor.run()
    except TritonNotFound as exc:
        print(f"kontext-serve: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
