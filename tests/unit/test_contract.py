"""config.pbtxt, model.py's engine contract and the client agree on names and dtypes."""

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kontext_client import protocol
from kontext_engine import contract

CONFIG = Path(__file__).resolve().parents[2] / "model_repository" / "flux_kontext" / "config.pbtxt"
TRITON_TO_CONTRACT = {"TYPE_STRING": "BYTES", "TYPE_INT64": "INT64", "TYPE_INT32": "INT32", "TYPE_FP32": "FP32"}


def load_config():
    return text_format.Parse(CONFIG.read_text(), model_config_pb2.ModelConfig())


def test_config_inputs_match_contract():
    config = load_config()
    declared = {
        i.name: (TRITON_TO_CONTRACT[model_config_pb2.DataType.Name(i.data_type)], i.optional, list(i.dims))
        for i in config.input
    }
    expected = {spec.name: (spec.dtype, spec.optional, [1]) for spec in contract.INPUTS}
    assert declared == expected


def test_config_outputs_match_contract():
    config = load_config()
    declared = {o.name: TRITON_TO_CONTRACT[model_config_pb2.DataType.Name(o.data_type)] for o in config.output}
    assert declared == {spec.name: spec.dtype for spec in contract.OUTPUTS}


def test_config_batches_with_a_bounded_queue():
    config = load_config()
    assert config.max_batch_size > 0
    assert config.dynamic_batching.default_queue_policy.max_queue_size > 0


def test_client_matches_contract():
    assert protocol.INPUT_DTYPES == {spec.name: spec.dtype for spec in contract.INPUTS}
    assert set(protocol.OUTPUT_NAMES) == {spec.name for spec in contract.OUTPUTS}
    assert protocol.MODEL_NAME == load_config().name


def test_client_sends_only_given_options_with_contract_dtypes():
    arrays = protocol.request_values("make it snowy", b"\x89PNG", seed=3, guidance=2.0)
    assert set(arrays) == {"prompt", "image", "seed", "guidance"}
    for name, array in arrays.items():
        assert array.shape == (1, 1), name
    assert arrays["seed"].dtype.name == "int64" and arrays["guidance"].dtype.name == "float32"


def test_config_parameters_are_engine_settings():
    from kontext_engine.settings import EngineSettings

    parameters = {key: value.string_value for key, value in load_config().parameters.items()}
    assert EngineSettings.from_parameters(parameters) == EngineSettings()  # every key known, defaults documented
    assert set(parameters) == set(EngineSettings().__dict__)
