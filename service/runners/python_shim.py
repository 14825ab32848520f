"""Runs inside the python kind's subprocess: import the entrypoint, call it, write its answer.

Standard library only, and never imported by the service: its source is passed
with ``python -c`` so that the code folder (the working directory) is first on
``sys.path``. The request file names the entrypoint and where to write the
answer; the function receives ``{"datasets", "params", "seed", "device",
"output_dir"}`` and returns its metrics.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import sys
import threading
import time
from typing import Any

NOT_FOUND = 3
WATCH_SECONDS = 0.5


def _die_with_parent(parent: int) -> None:
    """Kill this process group once the executor that started it is gone (however it ended)."""
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _answer(path: str, answer: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(answer, handle, allow_nan=False)


def main(argv: list[str]) -> int:
    """Call the entrypoint named in the request file ``argv[1]``; exit 3 when it does not exist.

    ``argv[2]`` is the pid of the executor; when it dies, so does this process group. ``0`` means the
    sandbox already ties this process's life to the executor's (bwrap --die-with-parent).
    """
    if int(argv[2]):
        threading.Thread(target=_die_with_parent, args=(int(argv[2]),), daemon=True).start()
    with open(argv[1], encoding="utf-8") as handle:
        request: dict[str, Any] = json.load(handle)
    answer_file = request.pop("answer_file")
    module_name, _, function_name = request.pop("entrypoint").partition(":")
    random.seed(request["seed"])
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(request["seed"] % 2**32)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            _answer(answer_file, {"ok": False, "not_found": True})
            return NOT_FOUND
        raise
    function = getattr(module, function_name, None)
    if not callable(function):
        _answer(answer_file, {"ok": False, "not_found": True})
        return NOT_FOUND
    returned = function(request)
    sys.stdout.flush()
    _answer(answer_file, {"ok": True, "returned": returned})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
