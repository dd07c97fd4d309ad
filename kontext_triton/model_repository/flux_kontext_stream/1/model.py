"""flux_kontext_stream: the pipeline model. Streams progress events, then the image (decoupled), to its
own clients, and serves the requests flux_kontext forwards (kontext_triton/forwarding.py)."""

import triton_python_backend_utils as pb_utils

from kontext_triton.forwarding import ForwardingChannel, request_parameters
from kontext_triton.responses import accepted_event, error_event, event_tensor, progress_event
from kontext_triton.serving import EngineModel, serve

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _events(*payloads: dict, outputs=()) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(output_tensors=[*(event_tensor(p) for p in payloads), *outputs])


class TritonPythonModel(EngineModel):
    def initialize(self, args):
        super().initialize(args)
        self.channel = ForwardingChannel()

    def execute(self, requests):
        senders = [request.get_response_sender() for request in requests]
        forwarded = [self.channel.forwarded(request_parameters(request)) for request in requests]
        for sender, forwarding in zip(senders, forwarded):
            if forwarding is not None:
                sender.send(_events(accepted_event()))

        def on_progress(position, done, total, elapsed_s):
            sender = senders[position]
            if forwarded[position] is not None or sender.is_cancelled():
                return  # the front needs no progress
            try:
                sender.send(_events(progress_event(done, total, elapsed_s)))
            except Exception as exc:  # one client's broken stream must not fail its batch neighbours
                pb_utils.Logger.log_warn(f"progress event not sent: {exc}")

        def respond(position, response):
            if not response.has_error():
                response = _events({"type": "result"}, outputs=response.output_tensors())
            elif forwarded[position] is not None:
                response = _events(error_event(response.error().message(), response.error().code()))
            senders[position].send(response, flags=FINAL)

        serve(self.engine, self.metrics, requests, respond, self.request_timeout_s, on_progress,
              in_flight=self.in_flight, forwarded=forwarded)
        return None
