"""flux_kontext: unary image edits (gRPC, HTTP, perf_analyzer). Logic lives in kontext_engine.

Responses go through each request's response sender, as in the streaming twin (allowed for
non-decoupled models). Triton 2.51 still delivers a non-decoupled model's responses when execute()
returns (measured: an invalid request batched with a slow one was answered 5 ms before it); the
decoupled flux_kontext_stream answers each request the moment its outcome is known.
"""

import triton_python_backend_utils as pb_utils

from kontext_triton.serving import EngineModel, serve

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel(EngineModel):
    def execute(self, requests):
        senders = [request.get_response_sender() for request in requests]

        def respond(position, response):
            senders[position].send(response, flags=FINAL)

        serve(self.engine, self.metrics, requests, respond, self.request_timeout_s, in_flight=self.in_flight)
        return None
