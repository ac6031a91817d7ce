"""What every actor's process does, whichever runtime hosts it (process or ray).

Both runtimes keep a user's actor to one math thread (several actors share a small machine's
cores) and send its exceptions back with a traceback text the driver can show. Doing this the
same way in one place keeps an actor's behaviour independent of the runtime it runs on.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Collection

#: the environment of every actor process: one thread per math library
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def limit_torch_threads() -> bool:
    """One intra-op thread for torch, if the actor has imported it (True) or not yet (False).

    torch is never imported here: an actor that does not use it must not pay for it.
    """
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "set_num_threads"):
        return False
    torch.set_num_threads(1)
    return True


def format_remote_traceback(exc: BaseException, where: str,
                            skip_files: Collection[str] = ()) -> str:
    """The traceback text of an exception raised in an actor, headed by ``where`` it happened.

    Frames at the top of the traceback whose file is in ``skip_files`` (absolute paths: the
    runtime's own actor loop) are left out, so that the text starts where the user's code does.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and \
            os.path.abspath(tb.tb_frame.f_code.co_filename) in skip_files:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return f"Traceback from {where}:\n{text}"
