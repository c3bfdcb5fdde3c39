"""The engines a server holds: the one serving, and the previous one kept warm for an instant rollback.

A batch takes a reference to the serving engine when it starts (``EngineSet.current``) and keeps it until
its rows are answered, so a swap never changes the engine under a request that already started; the old
engine is freed when the last such batch lets go. At most two engines are resident by design (the
serving one and the previous one); ``resident`` counts what is really alive, in-flight batches included.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from enginekit.runtime import EngineRuntime


@dataclass(eq=False)
class LoadedEngine:
    runtime: EngineRuntime
    version: str
    digest: str
    """Bundle digest (sha256 of the canonical manifest)."""
    bundle_dir: Path
    source: str = "channel"
    """``channel`` (fetched when the pointer named it) or ``local copy`` (started without the store)."""
    loaded_at: float = field(default_factory=time.time)

    @property
    def labels(self) -> list[str]:
        return self.runtime.manifest.labels


_ALIVE: weakref.WeakSet[LoadedEngine] = weakref.WeakSet()


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and RSS would creep per swap).

    No ``gc.collect()`` here: an engine holds no reference cycle, so it is freed the moment its last
    reference goes, and a full collection would hold the GIL for tens of milliseconds on every swap (the
    event loop and the batcher stall, and requests pile up behind them)."""
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL(name).malloc_trim(0)


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX)``); call before threads allocate.

    Every thread that allocates can get an arena of its own (up to 8 per core): the batcher's workers, the
    follower, the staging thread and the library pools each fragment their own heap, and memory freed in
    one (an old engine's buffers) is reused only there. Returns False where this is not glibc."""
    name = ctypes.util.find_library("c")
    if not name or arenas <= 0:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc
        return False


class EngineSet:
    def __init__(self, keep_previous_s: float) -> None:
        self._lock = threading.Lock()
        self._current: LoadedEngine | None = None
        self._previous: LoadedEngine | None = None
        self._previous_until = 0.0
        self.keep_previous_s = keep_previous_s

    @staticmethod
    def track(engine: LoadedEngine) -> LoadedEngine:
        _ALIVE.add(engine)
        return engine

    @property
    def current(self) -> LoadedEngine | None:
        return self._current

    @property
    def previous(self) -> LoadedEngine | None:
        with self._lock:
            self._expire_previous_locked()
            return self._previous

    @property
    def resident(self) -> int:
        """Engines alive in this process (serving, previous, and any still finishing a batch)."""
        return len(_ALIVE)

    def swap(self, engine: LoadedEngine) -> LoadedEngine | None:
        """Serve ``engine`` from now on; the one it replaces becomes the previous one. Returns that one."""
        with self._lock:
            replaced, self._current = self._current, engine
            dropped = self._previous
            self._previous = replaced
            self._previous_until = time.monotonic() + self.keep_previous_s
        if dropped is not None and dropped is not engine:
            del dropped
            _release_freed_memory()
        return replaced

    def rollback(self, version: str) -> LoadedEngine | None:
        """Swap the still-resident previous engine back in if it is ``version``; None if it is not there."""
        with self._lock:
            self._expire_previous_locked()
            previous = self._previous
            if previous is None or previous.version != version:
                return None
            self._previous, self._current = self._current, previous
            self._previous_until = time.monotonic() + self.keep_previous_s
            return previous

    def drop_previous(self) -> None:
        """Free the previous engine now (before loading another one: at most two stay resident)."""
        with self._lock:
            dropped, self._previous = self._previous, None
        if dropped is not None:
            del dropped
            _release_freed_memory()

    def _expire_previous_locked(self) -> None:
        if self._previous is not None and time.monotonic() >= self._previous_until:
            self._previous = None

    def expire(self) -> None:
        """Free the previous engine once its keep-warm time is over (called from the follower's loop)."""
        with self._lock:
            expired = self._previous is not None and time.monotonic() >= self._previous_until
            if expired:
                self._previous = None
        if expired:
            _release_freed_memory()
