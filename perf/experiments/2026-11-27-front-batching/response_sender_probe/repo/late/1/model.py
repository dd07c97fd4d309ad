import threading, time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.cancelled = 0
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.answer, args=(request,), daemon=True).start()
        return None
    def answer(self, request):
        x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
        delay = float(x.reshape(-1)[0])
        sender = request.get_response_sender()
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if request.is_cancelled():
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            time.sleep(0.01)
        if delay > 5:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("too slow", pb_utils.TritonError.INVALID_ARG)),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("Y", (x * 2).astype(np.float32))]),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
