"""The server's threads as the operating system sees them: priorities and names.

Linux gives a new thread the niceness of the thread that creates it. Thread pools created lazily, on
first use, therefore take the priority of whoever used them first — in a server that stages new versions
on a niced thread, that is the staging thread: the tokenizer library's pool (used by every request's
tokenization) would then run at the staging priority for the rest of the process's life, and staging
would no longer give way to serving. ``start_shared_pools`` creates it from the calling thread (the
server's main thread, at normal priority) before anything is niced.

``lower_priority`` lowers the calling thread's own priority (staging: the follower's staging thread and the
fetch process). Niceness alone still lets a niced thread finish its time slice before a serving thread that
wakes gets the core (Linux's EEVDF scheduler protects the running task's slice); a thread in the
``SCHED_IDLE`` class is preempted at once by any normal thread that wakes, and weighs a fifth of nice 19.

``name_os_thread`` sets the kernel's name of the calling thread (``top -H``, ``ps -L``, ``py-spy``,
``/proc/<pid>/task/*/comm``), so the batcher, the channel follower and the pools can be told apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

_PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS (Linux only; 15 bytes kept; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # no libc to speak of: names are a convenience only
        pass


def lower_priority(nice: int, *, idle: bool) -> str:
    """Lower the calling thread's priority (this thread only, and the threads it creates from now on):
    niceness ``nice`` and, with ``idle``, the ``SCHED_IDLE`` class. Returns what was applied, e.g.
    ``"nice 19, SCHED_IDLE"``; what the OS does not allow (not Linux, a sandbox) is logged and left out."""
    applied = []
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # Linux: niceness is per thread
            applied.append(f"nice {nice}")
        except (OSError, AttributeError) as error:
            logger.info("this thread keeps its niceness: %s", error)
    if idle:
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
            applied.append("SCHED_IDLE")
        except (OSError, AttributeError) as error:
            logger.info("this thread stays in its scheduling class: %s", error)
    return ", ".join(applied) or "normal priority"


def start_shared_pools() -> None:
    """Start, from this thread, the threads that libraries create on first use (see the module's
    docstring): ONNX Runtime's, started by its import, and the tokenizer library's worker pool.

    The ``tokenizers`` library parallelises ``encode_batch`` on one process-wide pool that it starts on
    the first parallel call; a two-text batch of a throwaway tokenizer is such a call.
    """
    import onnxruntime  # noqa: F401 - the import itself starts a thread

    try:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel

        tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))  # noqa: S106 - a token, not a password
        tokenizer.encode_batch(["a", "b", "c", "d"])
    except Exception as error:  # pragma: no cover - a tokenizers release without these: pools start later
        logger.info("tokenizer pool not started ahead: %s", error)
