"""Entry point of a context-parallel worker process: `python -m kontext_engine.parallel_worker` (started by
rank 0, never by hand; see context_parallel.py)."""

import faulthandler
import logging
import os

from kontext_engine.context_parallel import worker_main

if __name__ == "__main__":
    faulthandler.enable()  # a native crash prints the worker's Python stacks to the server log (its stderr)
    code = 1
    try:
        code = worker_main()
    finally:
        # At once, whatever happened: rank 0 tears the group (and its store) down as soon as the workers
        # are gone, and a worker waiting in destroy_process_group() or interpreter shutdown would poll a
        # dead store while holding its GPU.
        logging.shutdown()
        os._exit(code)
