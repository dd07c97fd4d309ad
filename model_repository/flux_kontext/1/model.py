"""Triton adapter: request tensors -> engine -> response tensors. All logic lives in kontext_engine."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from kontext_engine import EditResult, InvalidRequest, KontextEngine, contract, parse_request
from kontext_engine.loading import resolve_device
from kontext_engine.settings import EngineSettings


def _tensors(request) -> dict:
    tensors = {}
    for spec in contract.INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        tensors[spec.name] = None if tensor is None else tensor.as_numpy()
    return tensors


def _response(result: EditResult) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(contract.OUTPUT_IMAGE.name, np.array([result.image], dtype=np.object_)),
            pb_utils.Tensor(contract.METADATA.name, np.array([json.dumps(result.metadata)], dtype=np.object_)),
        ]
    )


def _error(message: str, code) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        device = resolve_device(args["model_instance_kind"], int(args["model_instance_device_id"]))
        self.engine = KontextEngine.load(
            EngineSettings.from_parameters(parameters), device, max_batch_size=max(1, config["max_batch_size"])
        )
        pb_utils.Logger.log_info(f"{args['model_instance_name']}: {self.engine.describe()}")

    def execute(self, requests):
        responses = [None] * len(requests)
        valid, positions = [], []
        for position, request in enumerate(requests):
            try:
                valid.append(parse_request(_tensors(request)))
                positions.append(position)
            except InvalidRequest as exc:
                pb_utils.Logger.log_warn(f"request {request.request_id() or '-'}: {exc}")
                responses[position] = _error(str(exc), pb_utils.TritonError.INVALID_ARG)
        for position, outcome in zip(positions, self.engine.run(valid)):
            if isinstance(outcome, EditResult):
                responses[position] = _response(outcome)
            else:
                pb_utils.Logger.log_error(f"request {requests[position].request_id() or '-'}: {outcome!r}")
                responses[position] = _error(f"inference failed: {outcome}", pb_utils.TritonError.INTERNAL)
        return responses

    def finalize(self):
        self.engine = None
