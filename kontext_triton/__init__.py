"""Helpers shared by the Triton Python models (model_repository/*/1/model.py).

The only package besides model.py files that imports triton_python_backend_utils: it turns Triton
requests into engine calls and engine outcomes into Triton responses, error codes and metrics
(serving.py, metrics.py), and forwards the unary model's requests to the pipeline model (forwarding.py,
responses.py: these two import no torch).
"""
