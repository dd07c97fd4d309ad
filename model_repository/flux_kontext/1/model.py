"""flux_kontext: unary image edits (gRPC, HTTP, perf_analyzer). Logic lives in kontext_engine."""

from kontext_triton.metrics import KontextMetrics
from kontext_triton.serving import free_device_memory, load_engine, serve


class TritonPythonModel:
    def initialize(self, args):
        self.engine = load_engine(args)
        self.metrics = KontextMetrics(args["model_name"])

    def execute(self, requests):
        return serve(self.engine, self.metrics, requests)

    def finalize(self):
        device, self.engine = self.engine.device, None
        free_device_memory(device)
