"""flux_kontext: unary image edits (HTTP, gRPC infer(), perf_analyzer).

A front without torch: each request is forwarded to flux_kontext_stream, the one model that holds the
pipeline, so both APIs share its dynamic batcher and one copy of the weights (kontext_triton.forwarding).
"""

import faulthandler

from kontext_triton.forwarding import Front


class TritonPythonModel:
    def initialize(self, args):
        faulthandler.enable()  # a native crash prints every thread's Python stack to the server log
        self.front = Front.from_args(args)

    def execute(self, requests):
        return self.front.execute(requests)

    def finalize(self):
        self.front.close()
