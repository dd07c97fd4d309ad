"""The engine is only the engine: importing every kontext_engine module loads nothing of Triton,
tritonclient, the server tooling or the client."""

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import kontext_engine
for module in pkgutil.walk_packages(kontext_engine.__path__, "kontext_engine."):
    importlib.import_module(module.name)
print("\\n".join(sorted(sys.modules)))
"""
FORBIDDEN = ("tritonclient", "triton_python_backend_utils", "c_python_backend_utils", "pytriton", "kontext_triton",
             "kontext_client", "grpc")


def test_no_triton_module_is_imported_by_the_engine():
    loaded = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout.split()
    assert "kontext_engine.engine" in loaded and "torch" in loaded  # the probe did import the engine
    offenders = [name for name in loaded if name.split(".")[0] in FORBIDDEN]
    assert offenders == []
