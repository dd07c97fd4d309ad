"""flux_kontext_stream: the pipeline model. Streams progress events, then the image (decoupled), to its
own clients and serves the requests flux_kontext forwards (kontext_triton.forwarding)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from kontext_engine import contract
from kontext_triton.forwarding import ForwardingChannel, error_event, request_parameters
from kontext_triton.serving import EngineModel, serve

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _event(payload: dict) -> "pb_utils.Tensor":
    return pb_utils.Tensor(contract.EVENT.name, np.array([json.dumps(payload)], dtype=np.object_))


class TritonPythonModel(EngineModel):
    def initialize(self, args):
        super().initialize(args)
        self.channel = ForwardingChannel()

    def execute(self, requests):
        senders = [request.get_response_sender() for request in requests]
        forwarded = [self.channel.forwarded(request_parameters(request)) for request in requests]

        def on_progress(position, done, total, elapsed_s):
            sender = senders[position]
            if forwarded[position] is not None or sender.is_cancelled():
                return  # the front needs no progress
            eta_s = elapsed_s / done * (total - done)
            event = {"type": "progress", "step": done, "steps": total,
                     "elapsed_s": round(elapsed_s, 3), "eta_s": round(eta_s, 3)}
            try:
                sender.send(pb_utils.InferenceResponse(output_tensors=[_event(event)]))
            except Exception as exc:  # one client's broken stream must not fail its batch neighbours
                pb_utils.Logger.log_warn(f"progress event not sent: {exc}")

        def respond(position, response):
            if not response.has_error():
                response = pb_utils.InferenceResponse(
                    output_tensors=[_event({"type": "result"}), *response.output_tensors()]
                )
            elif forwarded[position] is not None:  # BLS would turn every error code into INTERNAL
                error = response.error()
                response = pb_utils.InferenceResponse(output_tensors=[error_event(error.message(), error.code())])
            senders[position].send(response, flags=FINAL)

        serve(self.engine, self.metrics, requests, respond, self.request_timeout_s, on_progress,
              in_flight=self.in_flight, forwarded=forwarded)
        return None
