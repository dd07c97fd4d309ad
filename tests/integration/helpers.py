"""Raw tritonclient requests, independent of our client package."""

import io
import json

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

MODEL = "flux_kontext"
DTYPES = {"prompt": "BYTES", "image": "BYTES", "seed": "INT64", "steps": "INT32", "guidance": "FP32",
          "width": "INT32", "height": "INT32", "output_format": "BYTES"}
NUMPY = {"BYTES": np.object_, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32}


def client_for(server, protocol):
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(server.grpc_url)
    return httpclient, httpclient.InferenceServerClient(server.http_url, network_timeout=120)


def infer(server, protocol="grpc", dtypes=None, **values):
    """Sends one request with the given fields; `dtypes` overrides a field's wire dtype."""
    module, client = client_for(server, protocol)
    dtypes = {**DTYPES, **(dtypes or {})}
    inputs = []
    for name, value in values.items():
        array = value if isinstance(value, np.ndarray) else np.array([[value]], dtype=NUMPY[dtypes[name]])
        infer_input = module.InferInput(name, list(array.shape), dtypes[name])
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    outputs = [module.InferRequestedOutput("output_image"), module.InferRequestedOutput("metadata")]
    result = client.infer(MODEL, inputs, outputs=outputs)
    image = Image.open(io.BytesIO(result.as_numpy("output_image").reshape(-1)[0]))
    return image, json.loads(result.as_numpy("metadata").reshape(-1)[0])


def png(width=96, height=64, color=(30, 120, 200)):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()
