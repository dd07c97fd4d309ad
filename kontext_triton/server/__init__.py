"""Server tooling: find tritonserver, start it on the model repository, supervise it.

Runs outside Triton (the `kontext-serve` command, tests, benchmarks); nothing here imports
triton_python_backend_utils or the engine (the models' stubs share one path convention with it:
`process.forwarding_directory`).
"""
