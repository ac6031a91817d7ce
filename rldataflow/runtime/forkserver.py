"""Starting actor processes fast and light: multiprocessing's forkserver, bent to actors' needs.

multiprocessing starts a child as a fresh interpreter (spawn) or as a fork of a fresh forkserver
interpreter; either way the child re-imports the driver's main script, and every interpreter
loads its own copy of heavy modules (torch: ~150 MB each). Actors need neither, so this module
holds the surgery on multiprocessing's internals that avoids it: hiding ``__main__`` from a
child's preparation data, preloading modules in the forkserver, and (``share_imports``) starting
the forkserver as a fork of the driver itself so that all processes share one copy of what the
driver imported. It is kept apart because it depends on CPython internals, not on actors.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

from rldataflow.runtime.actor_side import THREAD_ENV

_ENV_LOCK = threading.Lock()


def start_actor_process(proc: Any) -> None:
    """Start an actor process without re-running the driver's ``__main__`` in it.

    multiprocessing's spawn and forkserver normally import the main script in every child (hence
    the ``if __name__ == "__main__":`` idiom). Actors need no such thing: cloudpickle ships classes
    and functions of ``__main__`` by value. So ``__main__`` is hidden while the child's preparation
    data is gathered, and a script without the idiom works, as it does with Ray. The thread
    environment variables are set for the child too (they count for spawn, and for the forkserver
    the first time it starts), so that even the interpreter start-up imports see them.
    """
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in THREAD_ENV}
        main = sys.modules.get("__main__")
        os.environ.update(THREAD_ENV)
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            proc.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def preload_in_forkserver(ctx: Any, modules: Sequence[str]) -> None:
    """Have the forkserver import ``modules`` once, so that actors start in a few milliseconds
    instead of importing them each.

    It only counts if the forkserver has not started yet; the modules already asked for stay.
    """
    try:
        from multiprocessing import forkserver

        current = list(getattr(forkserver._forkserver, "_preload_modules", None) or ["__main__"])
        wanted = [m for m in modules if m not in current]
        if wanted:
            ctx.set_forkserver_preload([*current, *wanted])
    except Exception:  # an optimization only
        pass


_FORKSERVER_MAIN_PARAMS = ["listener_fd", "alive_r", "preload", "main_path", "sys_path"]
_FORKSERVER_STATE = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid", "_lock")


def fork_forkserver(preload: Sequence[str]) -> bool:
    """Start multiprocessing's forkserver as a fork of this process rather than a new
    interpreter, so that what this process has imported (torch: ~150 MB of private memory in
    every interpreter that imports it) is shared, copy-on-write, by the driver, the forkserver
    and every actor, instead of being loaded once here and once in the forkserver's family.

    Only from a process running a single Python thread (a fork copies no other thread, and a
    lock one of them held would stay held in the copy), when no forkserver runs yet, and on
    the Pythons whose forkserver internals match what this expects (3.10-3.13); the
    ``preload`` modules are imported here first. Returns False when it did nothing (the
    regular forkserver then starts as before).
    """
    import gc
    import inspect
    from multiprocessing import connection, forkserver, resource_tracker, util

    server = forkserver._forkserver
    try:
        params = list(inspect.signature(forkserver.main).parameters)
    except (TypeError, ValueError):
        return False
    if (threading.active_count() != 1 or params != _FORKSERVER_MAIN_PARAMS
            or not all(hasattr(server, a) for a in _FORKSERVER_STATE)
            or hasattr(server, "_forkserver_authkey") or not hasattr(os, "fork")):
        return False
    import importlib

    for name in preload:
        importlib.import_module(name)
    with server._lock:
        if server._forkserver_pid is not None:
            return False
        resource_tracker.ensure_running()
        address = connection.arbitrary_address("AF_UNIX")
        listener = socket.socket(socket.AF_UNIX)
        try:
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):
                os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()
            for stream in (sys.stdout, sys.stderr):  # else the copy could write them again
                with contextlib.suppress(Exception):
                    stream.flush()
            # What is alive now (the imported modules, mostly) leaves the collector's care
            # here and in the copies: a collection writes to every object it visits, and so
            # would un-share the pages (Python's documented recipe for fork without exec).
            gc.freeze()
            pid = os.fork()
            if pid == 0:  # the forkserver: serve until every client has gone, never return
                try:
                    _become_forkserver(listener.fileno(), alive_r)
                finally:
                    os._exit(0)
            os.close(alive_r)
        finally:
            listener.close()
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    return True


def stop_forked_forkserver() -> None:
    """Stop the forkserver :func:`fork_forkserver` started (a later runtime starts a regular
    one). Else it would outlive the driver's interpreter shutdown, which writes to every
    object and so un-shares the pages: for a moment both copies would exist."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    with server._lock:
        pid, alive_w = server._forkserver_pid, server._forkserver_alive_fd
        if pid is None:
            return
        server._forkserver_pid = server._forkserver_address = None
        server._forkserver_alive_fd = None
    with contextlib.suppress(OSError):
        os.close(alive_w)  # it exits when no client holds this pipe any more
    try:  # reap it (it is our child) if it ends within a moment; it never blocks us longer
        pidfd = os.pidfd_open(pid)
        try:
            select.select([pidfd], [], [], 1.0)
        finally:
            os.close(pidfd)
        os.waitpid(pid, os.WNOHANG)
    except (AttributeError, OSError):
        pass


def _become_forkserver(listener_fd: int, alive_r: int) -> None:
    from multiprocessing import forkserver

    keep = {0, 1, 2, listener_fd, alive_r}
    try:
        open_fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:  # the driver's sockets, files and pipes are not the forkserver's
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The fork happened inside ``with server._lock``: this copy (and every actor it forks) would
    # inherit the lock held, and an actor that starts actors of its own (an aggregator) would
    # wait on it for ever. Those actors start their own forkserver, from a fresh state.
    server = forkserver._forkserver
    server._lock = threading.Lock()
    server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None
    forkserver.main(listener_fd, alive_r, [])


def start_forkserver_soon() -> None:
    """Start the forkserver in the background, so its imports overlap the driver's own."""

    def start() -> None:
        try:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        except Exception:  # create_actor starts it anyway
            pass

    threading.Thread(target=start, name="rldataflow-forkserver-start", daemon=True).start()
