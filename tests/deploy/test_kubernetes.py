"""The kustomize overlays render, validate strictly against current Kubernetes versions, pass checkov,
and agree with the server they run: ports, probe paths, model names, settings, time budgets."""

import re

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kontext_engine.profiles import settings_from_parameters
from kontext_triton.server import cli
from kontext_triton.server.process import DEFAULT_MODEL_REPOSITORY
from kontext_triton.server.supervisor import KILL_MARGIN_S
from tests.deploy.tools import ROOT, render, run_tool

OVERLAYS = ["one-gpu", "two-gpus"]
KUBERNETES_VERSIONS = ["1.33.0", "1.35.0", "1.37.0"]
COLD_START_S = 226  # start to ready on an H100 with an empty compile cache, max_batch_size 4 (README)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory):
    text = render(request.param)
    path = tmp_path_factory.mktemp("rendered") / f"{request.param}.yaml"
    path.write_text(text)
    documents = [d for d in yaml.safe_load_all(text) if d]
    return request.param, path, {(d["kind"], d["metadata"]["name"]): d for d in documents}


def test_every_resource_validates_strictly(rendered):
    _, path, _ = rendered
    for version in KUBERNETES_VERSIONS:
        done = run_tool("kubernetes-validate", "kubernetes-validate", "--strict", "--quiet", "-k", version, str(path))
        assert done.returncode == 0, done.stdout + done.stderr


def test_checkov_passes(rendered):
    _, path, _ = rendered
    done = run_tool("checkov", "checkov", "-f", str(path), "--framework", "kubernetes", "--skip-download", "--quiet",
                    "--compact")
    assert done.returncode == 0 and "Failed checks: 0" in done.stdout, done.stdout + done.stderr


def triton_container(resources):
    (container,) = resources["Deployment", "flux-kontext"]["spec"]["template"]["spec"]["containers"]
    return container


def test_ports_models_and_probes_are_the_servers(rendered):
    _, _, resources = rendered
    container = triton_container(resources)
    args = cli.parse_args(container["args"][1:])  # the real command line parser
    assert container["args"][0] == "kontext-serve"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.http_port, "grpc": args.grpc_port, "metrics": args.metrics_port}
    assert args.host == "0.0.0.0" and args.models
    configs = [text_format.Parse((DEFAULT_MODEL_REPOSITORY / model / "config.pbtxt").read_text(),
                                 model_config_pb2.ModelConfig()) for model in args.models]
    forwarded_to = {c.parameters["pipeline_model"].string_value for c in configs if "pipeline_model" in c.parameters}
    assert forwarded_to and forwarded_to <= set(args.models)  # the unary front loads with its pipeline model
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    readiness = re.fullmatch(r"/v2/models/(\w+)/ready", container["readinessProbe"]["httpGet"]["path"])
    assert readiness and readiness.group(1) in args.models
    service = resources["Service", "flux-kontext"]["spec"]["ports"]
    assert {p["targetPort"] for p in service} == {"http", "grpc"}  # clients never reach the metrics port
    metrics = resources["Service", "flux-kontext-metrics"]["spec"]["ports"]
    assert [p["targetPort"] for p in metrics] == ["metrics"]
    policy = resources["NetworkPolicy", "flux-kontext"]["spec"]["ingress"]
    assert {p["port"] for rule in policy for p in rule["ports"]} == set(ports.values())


def test_settings_are_ones_the_server_accepts(rendered):
    _, _, resources = rendered
    env = {e["name"]: e["value"] for e in triton_container(resources)["env"]}
    settings = settings_from_parameters({}, env)  # unknown keys or values would raise, naming them
    assert settings.model_source.startswith("/models/") and env["KONTEXT_ON_SERVER_EXIT"] == "exit"


def test_time_budgets_cover_start_up_and_shutdown(rendered):
    _, _, resources = rendered
    deployment = resources["Deployment", "flux-kontext"]
    pod = deployment["spec"]["template"]["spec"]
    container = triton_container(resources)
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 3 * COLD_START_S and deployment["spec"]["progressDeadlineSeconds"] > budget
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    exit_timeout = cli.parse_args(container["args"][1:]).exit_timeout
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + exit_timeout + KILL_MARGIN_S


def test_pods_are_locked_down_and_guaranteed(rendered):
    overlay, _, resources = rendered
    pod = resources["Deployment", "flux-kontext"]["spec"]["template"]["spec"]
    container = triton_container(resources)
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["fsGroup"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == {"one-gpu": 1, "two-gpus": 2}[overlay]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory" and volumes["shm"]["emptyDir"]["sizeLimit"]
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/dev/shm", "/tmp", "/cache"} <= mounted  # the writable places under a read-only root
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
    assert claims <= {name for kind, name in resources if kind == "PersistentVolumeClaim"}


def test_the_autoscaler_reads_the_metric_the_adapter_rule_serves(rendered):
    _, _, resources = rendered
    (metric,) = resources["HorizontalPodAutoscaler", "flux-kontext"]["spec"]["metrics"]
    rules = yaml.safe_load((ROOT / "deploy/kubernetes/monitoring/prometheus-adapter-rules.yaml").read_text())
    (rule,) = rules["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and "nv_inference_request_success" in rule["metricsQuery"]


def test_the_kserve_runtime_runs_the_same_server():
    runtime = yaml.safe_load((ROOT / "deploy/kserve/servingruntime.yaml").read_text())
    (container,) = runtime["spec"]["containers"]
    args = cli.parse_args(container["args"][1:])
    assert container["args"][0] == "kontext-serve" and (args.http_port, args.grpc_port) == (8080, 9000)
    assert all((DEFAULT_MODEL_REPOSITORY / m / "config.pbtxt").exists() for m in args.models)
    settings_from_parameters({}, {e["name"]: e["value"] for e in container["env"]})
