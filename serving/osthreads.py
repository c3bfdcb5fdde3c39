"""The server's threads as the operating system sees them: priorities and names.

Linux gives a new thread the niceness of the thread that creates it. Thread pools created lazily, on
first use, therefore take the priority of whoever used them first — in a server that stages new versions
on a niced thread, that is the staging thread: the tokenizer library's pool (used by every request's
tokenization) would then run at the staging priority for the rest of the process's life, and staging
would no longer give way to serving. ``start_shared_pools`` creates it from the calling thread (the
server's main thread, at normal priority) before anything is niced.

``name_os_thread`` sets the kernel's name of the calling thread (``top -H``, ``ps -L``, ``py-spy``,
``/proc/<pid>/task/*/comm``), so the batcher, the channel follower and the pools can be told apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

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
