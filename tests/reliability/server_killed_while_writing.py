"""``voxgate serve`` that SIGKILLs itself at one point of writing a file job's result, for the reliability suite.

``KILL_AT_RESULT_STAGE=before-rename``: the result is fully written to its ``.part`` file, not yet renamed.
``KILL_AT_RESULT_STAGE=after-rename``: the result file is in place, the job store does not know it yet.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from voxgate.cli import app

STAGE = os.environ["KILL_AT_RESULT_STAGE"]
_replace = os.replace


def _replace_then_maybe_die(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
    is_result = str(src).endswith(".part") and os.path.basename(os.path.dirname(str(src))) == "results"
    if is_result and STAGE == "before-rename":
        os.kill(os.getpid(), signal.SIGKILL)
    _replace(src, dst, *args, **kwargs)
    if is_result and STAGE == "after-rename":
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = _replace_then_maybe_die
app()
