"""Process-wide settings that keep the agent small, applied by ``edge-agent run`` before anything else.

The agent's memory target is relative: at most 1.3x a bare runtime process holding the same model
(benchmarks/agent_bench.py). What these save, measured there, is in docs/agent.md (Performance).

- glibc gives each thread that allocates its own malloc arena (up to 8 per core), and an arena keeps
  freed blocks for reuse. The agent's threads each touch a few image- and tensor-sized buffers, so
  every arena would hold megabytes nobody uses again; two arenas (the main thread's and one shared
  by the helpers) cost no measurable time. ``MALLOC_ARENA_MAX`` in the environment wins.
- paho-mqtt imports ``ssl`` and ``urllib.request`` (with ``http.client`` and half of ``email``) at
  load time. ``ssl`` is needed only for a TLS broker, ``urllib.request`` only to read proxy variables
  when PySocks is installed: both are deferred to their first use (edge.deferred). The agent process
  imports nothing else that could bind a placeholder (``from ssl import ...``). Worth 3.3 MB, re-measured
  once the config moved to msgspec in-process (no forked validation child): 1.274x of a bare process
  with it, 1.314x without (benchmarks/agent_bench.py; docs/agent.md).
"""

from __future__ import annotations

import os

_M_ARENA_MAX = -8  # glibc <malloc.h>

# paho reads these two on every plain socket read or write that would block.
SSL_PLACEHOLDERS = ("SSLWantReadError", "SSLWantWriteError")


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before threads start); False where it does not apply."""
    if arenas < 1:
        raise ValueError(f"arenas must be at least 1, got {arenas}")
    if "MALLOC_ARENA_MAX" in os.environ:  # the operator's choice, already applied by glibc
        return False
    try:
        import ctypes  # numpy imports it anyway: no cost

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def defer_unused_imports() -> list[str]:
    """Defer what paho imports and a plain-TCP agent never uses; returns the modules deferred."""
    from edge.deferred import defer

    deferred = []
    if defer("ssl", placeholders=SSL_PLACEHOLDERS):
        deferred.append("ssl")
    if defer("urllib.request"):
        deferred.append("urllib.request")
    return deferred


def apply() -> None:
    limit_malloc_arenas()
    defer_unused_imports()
