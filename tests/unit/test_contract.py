"""config.pbtxt, model.py's engine contract and the client agree on names and dtypes."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kontext_client import protocol
from kontext_engine import contract
from kontext_triton.server.process import DEFAULT_MODEL_REPOSITORY

REPOSITORY = DEFAULT_MODEL_REPOSITORY
TRITON_TO_CONTRACT = {"TYPE_STRING": "BYTES", "TYPE_INT64": "INT64", "TYPE_INT32": "INT32", "TYPE_FP32": "FP32"}
MODELS = {"flux_kontext": contract.OUTPUTS, "flux_kontext_stream": contract.STREAM_OUTPUTS}


def load_config(model="flux_kontext"):
    return text_format.Parse((REPOSITORY / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("model", MODELS)
def test_config_inputs_match_contract(model):
    config = load_config(model)
    declared = {
        i.name: (TRITON_TO_CONTRACT[model_config_pb2.DataType.Name(i.data_type)], i.optional, list(i.dims))
        for i in config.input
    }
    expected = {spec.name: (spec.dtype, spec.optional, [1]) for spec in contract.INPUTS}
    assert declared == expected


@pytest.mark.parametrize("model, outputs", MODELS.items())
def test_config_outputs_match_contract(model, outputs):
    config = load_config(model)
    declared = {o.name: TRITON_TO_CONTRACT[model_config_pb2.DataType.Name(o.data_type)] for o in config.output}
    assert declared == {spec.name: spec.dtype for spec in outputs}
    assert config.model_transaction_policy.decoupled == (model == "flux_kontext_stream")


@pytest.mark.parametrize("model", MODELS)
def test_config_batches_with_one_bounded_queue(model):
    config = load_config(model)
    assert config.max_batch_size > 0
    assert config.dynamic_batching.default_queue_policy.max_queue_size > 0
    # Triton bounds each priority level separately and lets any client claim any level.
    assert config.dynamic_batching.priority_levels == 0


def test_the_unary_model_is_a_cpu_front_for_the_one_pipeline_model():
    unary, stream = load_config("flux_kontext"), load_config("flux_kontext_stream")
    assert {key: value.string_value for key, value in unary.parameters.items()} == {"pipeline_model": stream.name}
    assert [group.kind for group in unary.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert unary.max_batch_size == stream.max_batch_size
    assert unary.dynamic_batching.default_queue_policy == stream.dynamic_batching.default_queue_policy
    # One request per forwarder: a forwarder answers when its whole execute() is done, so a group would wait
    # for its slowest request (perf/experiments/2026-11-27-front-batching/).
    assert list(unary.dynamic_batching.preferred_batch_size) == [1]


def test_client_matches_contract():
    assert protocol.INPUT_DTYPES == {spec.name: spec.dtype for spec in contract.INPUTS}
    assert set(protocol.OUTPUT_NAMES) == {spec.name for spec in contract.OUTPUTS}
    assert set(protocol.STREAM_OUTPUT_NAMES) == {spec.name for spec in contract.STREAM_OUTPUTS}
    assert protocol.MODEL_NAME == load_config().name
    assert protocol.STREAM_MODEL_NAME == load_config("flux_kontext_stream").name


def test_client_sends_only_given_options_with_contract_dtypes():
    arrays = protocol.request_values("make it snowy", b"\x89PNG", seed=3, guidance=2.0)
    assert set(arrays) == {"prompt", "image", "seed", "guidance"}
    for name, array in arrays.items():
        assert array.shape == (1, 1), name
    assert arrays["seed"].dtype.name == "int64" and arrays["guidance"].dtype.name == "float32"


def test_pipeline_parameters_are_serving_options_or_a_profile_with_overrides():
    from kontext_engine.profiles import settings_from_parameters
    from kontext_triton.parameters import SERVING_PARAMETERS, split_parameters

    parameters = load_config("flux_kontext_stream").parameters
    serving, engine = split_parameters({key: value.string_value for key, value in parameters.items()})
    assert set(serving) == set(SERVING_PARAMETERS)
    settings_from_parameters(engine)  # every key known, every value readable
