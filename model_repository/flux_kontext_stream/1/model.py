"""flux_kontext_stream: decoupled twin of flux_kontext; streams progress events, then the image."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from kontext_engine import contract
from kontext_triton.metrics import KontextMetrics
from kontext_triton.serving import free_device_memory, load_engine, serve

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _event(payload: dict) -> "pb_utils.Tensor":
    return pb_utils.Tensor(contract.EVENT.name, np.array([json.dumps(payload)], dtype=np.object_))


class TritonPythonModel:
    def initialize(self, args):
        self.engine = load_engine(args)
        self.metrics = KontextMetrics(args["model_name"])

    def execute(self, requests):
        senders = [request.get_response_sender() for request in requests]

        def on_progress(position, done, total, elapsed_s):
            sender = senders[position]
            if not sender.is_cancelled():
                eta_s = elapsed_s / done * (total - done)
                event = {"type": "progress", "step": done, "steps": total,
                         "elapsed_s": round(elapsed_s, 3), "eta_s": round(eta_s, 3)}
                sender.send(pb_utils.InferenceResponse(output_tensors=[_event(event)]))

        for sender, response in zip(senders, serve(self.engine, self.metrics, requests, on_progress)):
            if not response.has_error():
                response = pb_utils.InferenceResponse(
                    output_tensors=[_event({"type": "result"}), *response.output_tensors()]
                )
            sender.send(response, flags=FINAL)
        return None

    def finalize(self):
        device, self.engine = self.engine.device, None
        free_device_memory(device)
