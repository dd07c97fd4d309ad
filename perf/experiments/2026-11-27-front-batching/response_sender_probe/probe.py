"""Does Triton 2.51's response sender let a non-decoupled Python model answer each request of a batch
on its own, and what do Triton's statistics record then? And does `preferred_batch_size: [ 1 ]` make
the dynamic batcher hand a model one request at a time (repo/one_each, 2 instances)?

  .venv/bin/python perf/experiments/2026-11-27-front-batching/response_sender_probe/probe.py

The model (repo/late) returns None from execute() and answers each request from its own thread after
the delay the request names (an error past 5 s, a CANCELLED error when the client gives up).
"""

import collections
import re
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from kontext_triton.server.process import TritonServer, free_ports

HERE = Path(__file__).resolve().parent
LOG = "/tmp/response_sender_probe.log"


def infer(url: str, delay: float) -> tuple:
    client = httpclient.InferenceServerClient(url)
    data = httpclient.InferInput("X", [1, 1], "FP32")
    data.set_data_from_numpy(np.array([[delay]], np.float32))
    started = time.monotonic()
    try:
        answer = float(client.infer("late", [data]).as_numpy("Y")[0, 0])
    except Exception as error:
        answer = str(error)[:60]
    return round(time.monotonic() - started, 2), answer


def main() -> None:
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(HERE / "repo", http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                      log_path=Path(LOG)) as server:
        delays = [2.0, 0.2, 0.2, 0.2, 1.0, 0.1, 6.0, 0.3]  # sent at once: the batcher groups them
        results = [None] * len(delays)

        def run(index: int) -> None:
            results[index] = infer(server.http_url, delays[index])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(delays))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for delay, (seconds, answer) in zip(delays, results):
            print(f"delay {delay:>4} s: answered after {seconds:>5} s with {answer}")
        client = grpcclient.InferenceServerClient(server.grpc_url)
        data = grpcclient.InferInput("X", [1, 1], "FP32")
        data.set_data_from_numpy(np.array([[3.0]], np.float32))
        try:
            client.infer("late", [data], client_timeout=0.5)
        except Exception as error:
            print(f"delay  3.0 s, client gives up after 0.5 s: {str(error)[:60]}")
        time.sleep(1.0)
        stats = client.get_inference_statistics("late").model_stats[0].inference_stats
        print(f"Triton's statistics: success {stats.success.count}, fail {stats.fail.count}, "
              f"compute_infer {stats.compute_infer.ns / 1e6 / max(stats.compute_infer.count, 1):.1f} ms per request")

        def three_requests() -> None:
            client = httpclient.InferenceServerClient(server.http_url)
            for _ in range(3):
                data = httpclient.InferInput("X", [1, 1], "FP32")
                data.set_data_from_numpy(np.array([[1.0]], np.float32))
                client.infer("one_each", [data])

        clients = [threading.Thread(target=three_requests) for _ in range(8)]
        [t.start() for t in clients]
        [t.join() for t in clients]
    sizes = collections.Counter(re.findall(r"BATCH (\d+)", Path(LOG).read_text()))
    print(f"one_each, 24 requests from 8 clients: batch sizes {dict(sizes)}")


if __name__ == "__main__":
    main()
