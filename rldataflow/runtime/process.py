"""The process runtime: every actor is a local OS process (the default runtime).

Each actor is one child process (``forkserver`` where available, else ``spawn``) connected to the
driver by a socket pair. The actor's class and the calls are shipped with cloudpickle, so classes
and functions defined in a test module, a notebook or a closure work.

Wire format: a stream socket pair per actor carrying frames, each ``_HDR`` (body length, call
id, kind) followed by the body; a receiver reads whatever has arrived in one system call and
parses every complete frame in it, so calls in flight are batched.

* driver -> actor: the driver's ``sys.path``, then the pickled ``(cls, args, kwargs)``; then
  ``_CALL`` frames (body: the pickled ``(method, args, kwargs)``; :meth:`ProcessRuntime.call_many`
  pickles it once and sends the same bytes to every actor) or ``_STOP``.
* actor -> driver: ``_READY`` / ``_CTOR_ERR`` once, then ``_OK`` (body: the pickled result) or
  ``_ERR`` (body: the pickled ``(exception, traceback text)``) per call, in call order.

On the driver, replies are read by the thread that waits for them: ``Future.result()``,
``wait()`` and the dataflow layer's waits (through :data:`~rldataflow.runtime.base.IO_DRIVERS`)
select (no polling) on every actor's connection and process sentinel at once, dispatch what
arrived, and keep the reader role ("parked") when their wait is over, so that a plan's loop reads
its own replies with no thread hand-off per item (that hand-off cost half of gather_async's
throughput). A daemon reader thread reads whenever no other thread does: the role is free, or
parked for more than ``_PARK_S`` (its holder is busy elsewhere), so callbacks still run and a
process that ends for any reason (SIGKILL included) still fails all its pending futures with
:class:`ActorDiedError` at once. A thread about to block in a send hands the role back first (the
actor may be blocked sending us a reply).
Calls are sent in the caller's thread. Future callbacks run in whichever thread reads: keep them
short (calls made from a callback are sent by a helper thread; a callback may wait on another
future, the reading then goes on nested in its thread).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import logging
import multiprocessing as mp
import os
import pickle
import select
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import types
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as mp_wait
from typing import Any

import cloudpickle

from rldataflow.runtime import base as _base
from rldataflow.runtime.base import (
    FIRST_COMPLETED,
    IO_DRIVERS,
    ActorDiedError,
    ActorHandle,
    DrivenFuture,
    Future,
    MethodSpec,
    RemoteError,
    RemoteTraceback,
    Runtime,
    invoke,
    method_name_of,
)

logger = logging.getLogger(__name__)

_HDR = struct.Struct("<QqB")  # body length, call id, frame kind
# driver -> actor
_INIT, _CALL, _STOP = 0, 1, 2
# actor -> driver
_OK, _ERR, _READY, _CTOR_ERR = 0, 1, 2, 3

_PROTOCOL = 5
_CHUNK = 64 * 1024       # the initial receive buffer (it grows for larger frames)
_BIG = 1024 * 1024       # a frame this large is received straight into its own buffer
_SPLIT = 64 * 1024       # call_many sends a payload this large without copying it per actor

_READER = -1     # the I/O token's owner when the reader thread holds it
_PARK_S = 0.05   # a token parked this long goes back to the reader thread

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
_ENV_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------
# framing (both sides)
# ---------------------------------------------------------------------------------------------
_tls = threading.local()  # a reusable pickler per thread (creating one costs more than a call)
_NO_HDR = b"\0" * _HDR.size


_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
_BY_REFERENCE: dict[Any, bool] = {}  # function -> can plain pickle send it by name?


def _importable_by_name(fn: Any) -> bool:
    """True if the child can import ``fn`` by module and qualified name, which is what cloudpickle
    would send for it too (it pickles such functions by reference)."""
    known = _BY_REFERENCE.get(fn)
    if known is None:
        module_name = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", "")
        target: Any = (sys.modules.get(module_name)
                       if module_name not in (None, "__main__") else None)
        for part in qualname.split("."):
            target = getattr(target, part, None)
        known = (isinstance(fn, types.FunctionType) and target is fn
                 and not cloudpickle.list_registry_pickle_by_value())
        if len(_BY_REFERENCE) < 4096:
            _BY_REFERENCE[fn] = known
    return known


def _is_small_call(method: Any, args: tuple, kwargs: dict) -> bool:
    """A method name or an importable function, scalar arguments (a gather's next-item
    request): the C pickler sends it exactly as cloudpickle would, several times faster."""
    return ((method.__class__ is str or _importable_by_name(method))
            and all(a.__class__ in _SCALARS for a in args)
            and all(v.__class__ in _SCALARS for v in kwargs.values()))


def _call_frame(call_id: int, method: Any, args: tuple, kwargs: dict) -> bytes | memoryview:
    """The frame of a call: small calls with the C pickler, anything else with cloudpickle."""
    if _is_small_call(method, args, kwargs):
        body = pickle.dumps((method, args, kwargs), protocol=_PROTOCOL)
        return _HDR.pack(len(body), call_id, _CALL) + body
    return _frame(call_id, _CALL, (method, args, kwargs))


def _result_frame(call_id: int, value: Any) -> bytes | memoryview:
    """The frame of a call's result (in an actor). Pickled with the C pickler when that works:
    it fails (PicklingError, AttributeError...) on exactly what cloudpickle would send by value
    instead (lambdas, classes shipped from the driver's ``__main__``, local functions), and
    then cloudpickle does it. Not while some module is registered to go by value."""
    if not cloudpickle.list_registry_pickle_by_value():
        try:
            return _frame(call_id, _OK, value, plain=True)
        except Exception:
            pass
    return _frame(call_id, _OK, value)


def _frame(call_id: int, kind: int, obj: Any, plain: bool = False) -> bytes | memoryview:
    """One frame holding ``obj`` cloudpickled (pickled straight after its header); ``plain``:
    with the C pickler (only for objects it pickles as cloudpickle would)."""
    key = "plain_pickler" if plain else "pickler"
    cached = getattr(_tls, key, None)
    setattr(_tls, key, None)  # taken: a nested use (from some __reduce__) makes its own
    if cached is None:
        buf = io.BytesIO()
        cached = (buf, (pickle.Pickler if plain else cloudpickle.Pickler)(buf, protocol=_PROTOCOL))
    buf, pickler = cached
    buf.seek(0)
    buf.truncate()
    buf.write(_NO_HDR)
    pickler.dump(obj)  # if this fails, the pickler is dropped: it may be in any state
    pickler.clear_memo()
    size = buf.tell()
    if size > _SPLIT:  # large: hand this buffer over rather than copy it
        view = buf.getbuffer()
        _HDR.pack_into(view, 0, size - _HDR.size, call_id, kind)
        return view
    with buf.getbuffer() as view:
        frame = _HDR.pack(size - _HDR.size, call_id, kind) + view[_HDR.size:]
    setattr(_tls, key, cached)
    return frame


class _Frames:
    """Parses the frames arriving on a stream socket; ``feed()`` is one ``recv`` system call."""

    __slots__ = ("sock", "buf", "start", "end", "big", "big_fill", "big_key", "ready")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(_CHUNK)
        self.start = self.end = 0
        self.big: bytearray | None = None
        self.big_fill = 0
        self.big_key = (0, 0)
        self.ready: deque = deque()  # complete frames: (call id, kind, body)

    def feed(self) -> bool:
        """Read what has arrived (blocks if nothing has); False at the end of the stream."""
        if self.big is not None:
            n = self.sock.recv_into(memoryview(self.big)[self.big_fill:])
            if not n:
                return False
            self.big_fill += n
            if self.big_fill == len(self.big):
                self.ready.append((*self.big_key, self.big))
                self.big = None
            return True
        buf = self.buf
        if self.end == len(buf):  # full of one partial frame: move it to the front, or grow
            if self.start:
                buf[:self.end - self.start] = buf[self.start:self.end]
                self.start, self.end = 0, self.end - self.start
            else:
                buf.extend(bytes(len(buf)))
        n = self.sock.recv_into(memoryview(buf)[self.end:])
        if not n:
            return False
        self.end += n
        self._parse()
        return True

    def _parse(self) -> None:
        buf, start, end, hs = self.buf, self.start, self.end, _HDR.size
        while end - start >= hs:
            length, call_id, kind = _HDR.unpack_from(buf, start)
            avail = end - start - hs
            if avail >= length:
                with memoryview(buf) as view:
                    self.ready.append((call_id, kind, bytes(view[start + hs:start + hs + length])))
                start += hs + length
            elif length >= _BIG:
                big = bytearray(length)
                big[:avail] = buf[start + hs:end]
                self.big, self.big_fill, self.big_key = big, avail, (call_id, kind)
                start = end
            else:
                break
        if start == end:
            start = end = 0
        self.start, self.end = start, end

    def next(self) -> tuple[int, int, Any]:
        """The next frame, blocking until it has arrived; EOFError at the end of the stream."""
        while not self.ready:
            if not self.feed():
                raise EOFError
        return self.ready.popleft()


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "its process ended (exit status unknown)"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        return f"its process was killed by {sig} (exit code {exitcode})"
    return f"its process exited with code {exitcode}"


# ---------------------------------------------------------------------------------------------
# the actor side (runs in the child process)
# ---------------------------------------------------------------------------------------------
_INTERNAL_FILES = {os.path.abspath(__file__), os.path.abspath(_base.__file__)}


def _format_remote(exc: BaseException, where: str) -> str:
    tb = exc.__traceback__
    # drop this runtime's own frames (the child loop, invoke) from the top of the traceback
    while tb is not None and tb.tb_next is not None and \
            os.path.abspath(tb.tb_frame.f_code.co_filename) in _INTERNAL_FILES:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return f"Traceback from {where}:\n{text}"


def _error_frame(call_id: int, kind: int, exc: BaseException, where: str) -> bytes | memoryview:
    tb_text = _format_remote(exc, where)
    try:
        out = _frame(call_id, kind, (exc, tb_text))
        pickle.loads(out[_HDR.size:])  # can the driver rebuild it? (e.g. a custom __init__)
        return out
    except Exception:
        return _frame(call_id, kind, (RemoteError(repr(exc)), tb_text))


def _limit_torch_threads() -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "set_num_threads"):
        return False
    torch.set_num_threads(1)
    return True


def _exit_with_driver(sock: socket.socket) -> None:
    """Exit at once when the driver's end of the socket closes, even in the middle of a call.

    A daemon thread waits (no polling) for the hang-up alone, never reading, so it takes nothing
    from the main loop. The driver closes its end only after this process has ended, or when the
    driver itself dies (even by SIGKILL): then the actor must not outlive it, whatever it is doing.
    """
    hangup = getattr(select, "POLLRDHUP", 0) | select.POLLHUP

    def watch() -> None:
        poller = select.poll()
        poller.register(sock.fileno(), hangup)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries it already
                continue
            if any(ev & (hangup | select.POLLERR | select.POLLNVAL) for _, ev in events):
                os._exit(0)

    threading.Thread(target=watch, name="rldataflow-driver-watch", daemon=True).start()


def _child_main(sock: socket.socket, name: str) -> None:
    """The entry point of an actor process."""
    # Ctrl-C goes to the whole process group: the driver handles it and shuts the actors down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(THREAD_ENV)  # before anything heavy (numpy, torch) is imported
    _exit_with_driver(sock)
    where = f"actor {name!r} (pid {os.getpid()})"
    frames = _Frames(sock)
    send = sock.sendall
    try:
        driver_path = pickle.loads(frames.next()[2])
        ctor = frames.next()[2]
    except (EOFError, OSError):
        return
    sys.path.extend(p for p in driver_path if p not in sys.path)
    try:
        cls, args, kwargs = pickle.loads(ctor)
        del ctor
        _limit_torch_threads()
        instance = cls(*args, **kwargs)
    except Exception as exc:
        with contextlib.suppress(OSError):
            send(_error_frame(0, _CTOR_ERR, exc, where))
        return
    torch_limited = _limit_torch_threads()
    try:
        send(_HDR.pack(0, 0, _READY))
        while True:
            try:
                call_id, kind, body = frames.next()
            except EOFError:  # the driver is gone
                return
            if kind == _STOP:
                stop = getattr(instance, "stop", None)
                if callable(stop):
                    try:
                        stop()
                    except Exception:  # best effort: the actor is going away anyway
                        logger.exception("%s: stop() failed", where)
                return
            method = None
            try:
                method, args, kwargs = pickle.loads(body)
                del body
                value = invoke(instance, method, args, kwargs)
            except Exception as exc:
                out = _error_frame(call_id, _ERR, exc, where)
            else:
                try:
                    out = _result_frame(call_id, value)
                except Exception as exc:
                    err = TypeError(f"the result of {method_name_of(method)}() on {where} "
                                    f"could not be pickled: {exc!r}")
                    err.__cause__ = exc
                    out = _error_frame(call_id, _ERR, err, where)
                del value
            if not torch_limited:
                torch_limited = _limit_torch_threads()
            send(out)
            del out
    except OSError:  # the connection broke: the driver is gone
        return


# ---------------------------------------------------------------------------------------------
# the driver side
# ---------------------------------------------------------------------------------------------
def _start_process(proc: Any) -> None:
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


def _preload_in_forkserver(ctx: Any, modules: Sequence[str] = ()) -> None:
    """Have the forkserver import this module (and ``modules``) once, so that actors start in a
    few milliseconds instead of importing them each.

    It only counts if the forkserver has not started yet; the modules already asked for stay.
    """
    try:
        from multiprocessing import forkserver

        current = list(getattr(forkserver._forkserver, "_preload_modules", None) or ["__main__"])
        wanted = [m for m in (__name__, *modules) if m not in current]
        if wanted:
            ctx.set_forkserver_preload([*current, *wanted])
    except Exception:  # an optimization only
        pass


_FORKSERVER_MAIN_PARAMS = ["listener_fd", "alive_r", "preload", "main_path", "sys_path"]
_FORKSERVER_STATE = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid", "_lock")


def _fork_forkserver(preload: Sequence[str]) -> bool:
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


def _stop_forked_forkserver() -> None:
    """Stop the forkserver :func:`_fork_forkserver` started (a later runtime starts a regular
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
    forkserver.main(listener_fd, alive_r, [])


def _start_forkserver_soon() -> None:
    """Start the forkserver in the background, so its imports overlap the driver's own."""

    def start() -> None:
        try:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        except Exception:  # create_actor starts it anyway
            pass

    threading.Thread(target=start, name="rldataflow-forkserver-start", daemon=True).start()


class _ActorState:
    """What the driver knows about one actor process."""

    def __init__(self, handle: ActorHandle, proc: Any, sock: socket.socket,
                 frames: _Frames) -> None:
        self.handle = handle
        self.proc = proc
        self.sock = sock
        self.frames = frames
        self.pid: int = proc.pid
        self.sentinel: int = proc.sentinel
        self.pending: dict[int, Future] = {}     # guarded by the runtime's lock
        self.outbox: deque = deque()              # (call id, frame parts), in call order
        self.send_lock = threading.Lock()
        self.alive = True        # False once killed, shut down or seen dead
        self.reason: str | None = None  # why it ended, once it has
        self.sock_open = True    # the reader still watches the socket
        self.exited = False      # the reader saw the process end and reaped it


class ProcessRuntime(Runtime):
    """One local OS process per actor (``get_runtime("process")``, the default).

    Args:
        start_method: ``"forkserver"`` (default where available: fast starts) or ``"spawn"``.
        stop_timeout: seconds :meth:`shutdown` gives actors to finish queued calls and run their
            ``stop()`` method before they are killed.
        start_timeout: seconds :meth:`create_actor` waits for a constructor (``None``: forever).
        preload: modules the forkserver imports once for all actors (e.g. the module of the
            actor class, with its heavy imports), so each actor starts in milliseconds.
        warm_up: start the forkserver now, in the background (its imports then overlap the
            driver's work until the first actor is created).
        share_imports: start the forkserver as a fork of this process (after importing
            ``preload`` here), so that the driver and all actors share one copy of their
            imported modules (torch's ~150 MB above all). Done only while this process runs a
            single Python thread and no forkserver runs yet; otherwise the regular forkserver
            (a fresh interpreter) starts. The fork happens when the first actor is created (the
            driver's own lazy initialisation done by then un-shares fewer pages afterwards),
            and the forkserver stops with this runtime. Python's ``gc.freeze()`` is applied to
            the driver at the fork (the recipe of the ``gc`` docs for fork without exec).
        driver_imports: with ``share_imports``, more modules to import in the driver before
            the fork: modules the driver will import anyway, whose later import would land
            among (and un-share) the shared pages.

    Sending a call blocks while the actor's socket buffer is full (a few hundred small calls, or
    a few large ones, not yet read by a busy actor): that is back-pressure, not a hang.
    """

    name = "process"

    def __init__(self, start_method: str | None = None, stop_timeout: float = 2.0,
                 start_timeout: float | None = None, preload: Sequence[str] = (),
                 warm_up: bool = False, share_imports: bool = False,
                 driver_imports: Sequence[str] = ()) -> None:
        super().__init__()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be 'forkserver' or 'spawn', not {start_method!r} "
                             "(a fork would copy the driver's threads, locks and sockets)")
        self.start_method = start_method
        self._forked_forkserver = self._fork_pending = False
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            _preload_in_forkserver(self._ctx, preload)
            # the fork waits for the first actor: by then the driver has done its own lazy
            # initialisation (torch's above all), which would otherwise un-share pages
            self._fork_pending = share_imports and threading.active_count() == 1
            self._preload = (*preload, *driver_imports)
            if not self._fork_pending and warm_up:
                _start_forkserver_soon()
        self._lock = threading.Lock()  # actors' alive flags and pending futures, the watch list
        self._exited = threading.Condition(self._lock)
        self._actors: dict[int, _ActorState] = {}
        self._call_ids = itertools.count(1)
        self._closed = False
        # the reader thread and its wake-up pipe (created with the first actor)
        self._reader: threading.Thread | None = None
        self._reader_stop = False
        # Who reads the actors' replies (the I/O token, guarded by self._lock): the thread
        # whose ident is _io_owner, or nobody. A thread waiting on a future takes the token and
        # reads itself; when it is done it keeps the token, "parked" (_io_parked_at), so that the
        # next wait of a busy loop starts at once. The reader thread takes a token that stays
        # parked longer than _PARK_S (or is free), so replies of a thread gone elsewhere are read.
        self._io_cond = threading.Condition(self._lock)
        self._io_owner: int | None = None
        self._io_parked_at: float | None = None
        self._io_wanted = False       # a thread waits for the reader thread to hand it over
        self._io_in_select = False    # the owner is blocked in select(): a wake-up interrupts it
        self._io_waiters = 0          # threads waiting on _io_cond to take the token
        self._io_bystanders = 0       # callbacks waiting on _io_cond for a result
        self._reader_idle = False     # the reader thread waits untimed (a parking wakes it)
        self._tls = threading.local()  # .dispatching: this thread is running future callbacks
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1
        self._to_watch: list[_ActorState] = []
        # a helper thread that sends calls made from the reader thread (future callbacks)
        self._sender: threading.Thread | None = None
        self._sender_q: Any = None
        atexit.register(self.shutdown)

    # -- actors ------------------------------------------------------------------------------
    def create_actor(self, cls: type, *args: Any, name: str | None = None,
                     **kwargs: Any) -> ActorHandle:
        """Start a process running ``cls(*args, **kwargs)``; returns when it is constructed.

        An exception raised by the constructor is raised here (its type kept, the actor-side
        traceback chained as a :class:`RemoteTraceback`).
        """
        if self._closed:
            raise RuntimeError("this ProcessRuntime has been shut down")
        if self._fork_pending:
            self._fork_pending = False
            self._forked_forkserver = _fork_forkserver(self._preload)
        handle = ActorHandle(self, self._unique_name(cls, name),
                             getattr(cls, "__name__", type(cls).__name__))
        ctor = _frame(0, _INIT, (cls, args, kwargs))
        sock, child_sock = socket.socketpair()
        proc = self._ctx.Process(
            target=_child_main, name=f"rldataflow:{handle.name}", daemon=False,
            args=(child_sock, handle.name))
        try:
            _start_process(proc)
        finally:
            child_sock.close()
        frames = _Frames(sock)
        try:
            self._handshake(handle, proc, sock, frames, ctor)
        except BaseException:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.join(5)
            sock.close()
            raise
        st = _ActorState(handle, proc, sock, frames)
        with self._lock:
            closed = self._closed
            if not closed:
                self._actors[handle.actor_id] = st
                self._start_reader()
                if self not in IO_DRIVERS:
                    IO_DRIVERS.append(self)
                self._to_watch.append(st)
        if closed:
            proc.kill()
            proc.join(5)
            sock.close()
            raise RuntimeError("this ProcessRuntime was shut down while an actor was starting")
        self._wake()
        return handle

    def _handshake(self, handle: ActorHandle, proc: Any, sock: socket.socket, frames: _Frames,
                   ctor: memoryview) -> None:
        kind, body = -1, None
        try:
            sock.sendall(_frame(0, _INIT, list(sys.path)))
            sock.sendall(ctor)
            del ctor
            while kind < 0:
                ready = mp_wait([sock, proc.sentinel], timeout=self.start_timeout)
                if not ready:
                    raise TimeoutError(f"actor {handle.name!r} ({handle.class_name}) was not "
                                       f"constructed within {self.start_timeout}s")
                # a reply sent just before the process ended still counts
                if sock in ready or mp_wait([sock], 0):
                    if not frames.feed():
                        break
                    if frames.ready:
                        _, kind, body = frames.ready.popleft()
                else:
                    break
        except OSError:
            pass
        if kind == _READY:
            return
        if kind == _CTOR_ERR:
            try:
                exc, tb_text = pickle.loads(body)
            except Exception as err:
                exc, tb_text = RemoteError(f"the constructor failed: {err!r}"), ""
            proc.join(5)
            raise exc from RemoteTraceback(tb_text)
        proc.join(5)
        raise ActorDiedError(handle.name, handle.class_name,
                             f"{_describe_exit(proc.exitcode)} while it was starting")

    def pid(self, actor: ActorHandle) -> int:
        """The OS process id of an actor (handy for fault-injection tests)."""
        return self._state(actor).pid

    def is_alive(self, actor: ActorHandle) -> bool:
        st = self._actors.get(actor.actor_id)
        return st is not None and st.alive

    def kill(self, actor: ActorHandle) -> None:
        """SIGKILL the actor's process; its pending futures fail with :class:`ActorDiedError`."""
        st = self._actors.get(actor.actor_id)
        if st is None:
            return
        with self._lock:
            if not st.alive:
                return
            st.alive = False
            st.reason = "it was killed (Runtime.kill)"
            pending, st.pending = st.pending, {}
            st.outbox.clear()
            proc = None if st.exited else st.proc
        if proc is not None:
            with contextlib.suppress(ValueError, OSError):  # the reader may have reaped it
                proc.kill()
        self._fail(st, pending.values())

    # -- calls -------------------------------------------------------------------------------
    def call(self, actor: ActorHandle, method: MethodSpec, *args: Any, **kwargs: Any) -> Future:
        fut = DrivenFuture(actor, method if method.__class__ is str else method_name_of(method),
                           self)
        st = self._actors.get(actor.actor_id)
        if st is None:
            fut._set_exception(self._unknown(actor))
            return fut
        call_id = next(self._call_ids)
        try:
            frame = _call_frame(call_id, method, args, kwargs)
        except Exception as exc:
            fut._set_exception(self._pickle_error(actor, method, exc))
            return fut
        self._submit(st, fut, call_id, (frame,))
        return fut

    def call_many(self, actors: Sequence[ActorHandle], method: MethodSpec, *args: Any,
                  **kwargs: Any) -> list[Future]:
        """Call one method with the same arguments on many actors, pickling them only once."""
        name = method_name_of(method)
        futures: list[Future] = [DrivenFuture(a, name, self) for a in actors]
        try:
            payload = cloudpickle.dumps((method, args, kwargs), protocol=_PROTOCOL)
        except Exception as exc:
            for fut in futures:
                fut._set_exception(self._pickle_error(fut.actor, method, exc))
            return futures
        for actor, fut in zip(actors, futures, strict=True):
            st = self._actors.get(actor.actor_id)
            if st is None:
                fut._set_exception(self._unknown(actor))
                continue
            call_id = next(self._call_ids)
            header = _HDR.pack(len(payload), call_id, _CALL)
            parts = (header, payload) if len(payload) > _SPLIT else (header + payload,)
            self._submit(st, fut, call_id, parts)
        return futures

    def _submit(self, st: _ActorState, fut: Future, call_id: int, parts: tuple) -> None:
        with self._lock:
            alive = st.alive
            if alive:
                st.pending[call_id] = fut
                st.outbox.append((call_id, parts))
        if not alive:
            fut._set_exception(self._died(st))
        elif getattr(self._tls, "dispatching", False):
            # A future callback: sending here could block the reader on a full socket while the
            # actor is itself blocked sending us a result. A helper thread sends it instead.
            self._kick_sender(st)
        else:
            self._flush(st)

    def _flush(self, st: _ActorState) -> None:
        """Send the actor's queued calls, in order (whoever holds its send lock sends them all)."""
        with st.send_lock:
            while True:
                try:
                    call_id, parts = st.outbox.popleft()
                except IndexError:
                    return
                try:
                    for part in parts:
                        self._send(st.sock, part)
                except OSError as exc:  # a broken pipe: the process is gone
                    with self._lock:
                        fut = st.pending.pop(call_id, None)
                    if fut is not None:
                        fut._set_exception(ActorDiedError(
                            st.handle.name, st.handle.class_name,
                            st.reason or f"its connection broke ({exc!r})"))
                        self._wake_waiters()

    def _send(self, sock: socket.socket, data: Any) -> None:
        try:
            sent = sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            # The actor is not reading: it may be blocked sending us a reply. If this thread
            # holds the I/O token, nobody reads that reply while we block here: hand it back.
            self.release_io()
            with memoryview(data) as view:
                sock.sendall(view[sent:])

    def _kick_sender(self, st: _ActorState) -> None:
        with self._lock:
            if self._sender is None:
                import queue

                self._sender_q = queue.SimpleQueue()
                self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                                name="rldataflow-process-sender")
                self._sender.start()
        self._sender_q.put(st)

    def _send_loop(self) -> None:
        while True:
            st = self._sender_q.get()
            if st is None:
                return
            self._flush(st)

    # -- the reader thread -------------------------------------------------------------------
    def _start_reader(self) -> None:  # with self._lock held
        if self._reader is not None:
            return
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name="rldataflow-process-reader")
        self._reader.start()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is already pending
            os.write(self._wake_w, b"\0")

    # -- reading replies: the I/O token -------------------------------------------------------
    def drive(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Read and dispatch replies in this thread until ``until()`` holds (True) or the timeout
        passes (False). If another thread reads, wait for it to hand over (the reader thread
        does at once) or to dispatch what ``until`` waits for."""
        me = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if until():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            in_callback = self._tls.__dict__.get("dispatching", False)
            with self._lock:
                if self._reader_stop:  # shut down: every future has been resolved
                    return until()
                owner = self._io_owner
                if in_callback:
                    # A callback waiting on a future. If this thread reads (further up its
                    # stack), it reads on, nested; else it waits for the reader to dispatch.
                    reads = owner == me or (owner == _READER
                                            and threading.current_thread() is self._reader)
                    if not reads:
                        self._wait_for_io("_io_bystanders", remaining)
                        continue
                elif (owner is None or owner == me
                        or (self._io_parked_at is not None and owner != _READER)):
                    self._io_owner, self._io_parked_at = me, None
                else:
                    if owner == _READER:
                        self._io_wanted = True
                        self._wake()
                    self._wait_for_io("_io_waiters", remaining)
                    continue
            if in_callback:
                self._io_round(until, remaining)
                continue
            try:
                self._io_round(until, remaining)
            finally:
                with self._lock:
                    if self._io_owner == me:
                        self._io_parked_at = time.monotonic()
                        if self._reader_idle or self._io_waiters or self._io_bystanders:
                            self._io_cond.notify_all()

    def _wait_for_io(self, counter: str, timeout: float | None) -> None:  # self._lock held
        setattr(self, counter, getattr(self, counter) + 1)
        try:
            self._io_cond.wait(timeout)
        finally:
            setattr(self, counter, getattr(self, counter) - 1)

    def interrupt(self) -> None:
        """Wake the thread blocked reading replies, so that it checks its condition again."""
        if self._io_in_select:
            self._wake()

    def release_io(self) -> None:
        """If this thread holds the I/O token (parked), give it back to the reader thread."""
        me = threading.get_ident()
        if self._io_owner != me:
            return
        with self._lock:
            if self._io_owner == me:
                self._io_owner = self._io_parked_at = None
                self._io_cond.notify_all()

    def wait(self, futures: Any, return_when: str = FIRST_COMPLETED,
             timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        futures = list(futures)
        if futures:
            check = any if return_when == FIRST_COMPLETED else all
            self.drive(lambda: check(f.done() for f in futures), timeout)
        return [f for f in futures if f.done()], [f for f in futures if not f.done()]

    def _read_loop(self) -> None:
        """The reader thread: reads whenever no other thread does (a free or long-parked token),
        so that callbacks run and deaths are seen while the driver is busy elsewhere."""
        while True:
            with self._lock:
                while True:
                    if self._reader_stop:
                        self._io_cond.notify_all()  # threads waiting for the token: read alone
                        return
                    owner, parked = self._io_owner, self._io_parked_at
                    if owner == _READER or (owner is None and not self._io_waiters):
                        break
                    if owner is None:  # handed over: let the waiting thread take it
                        self._io_cond.wait(_PARK_S)
                        continue
                    if parked is None:  # a thread is reading: sleep until it parks
                        self._reader_idle = True
                        self._io_cond.wait()
                        self._reader_idle = False
                        continue
                    idle_for = time.monotonic() - parked
                    if idle_for >= _PARK_S:
                        break
                    self._io_cond.wait(_PARK_S - idle_for)
                self._io_owner, self._io_parked_at = _READER, None
            try:
                self._io_round(None, None)
            finally:
                with self._lock:
                    if self._io_wanted:
                        self._io_wanted = False
                        self._io_owner = None
                        self._io_cond.notify_all()
                    elif self._io_waiters or self._io_bystanders:
                        self._io_cond.notify_all()

    def _io_round(self, until: Callable[[], bool] | None, timeout: float | None) -> None:
        """One select over every actor's socket and process sentinel (by the token's holder)."""
        sel = self._selector
        with self._lock:
            new, self._to_watch = self._to_watch, []
        for st in new:
            sel.register(st.sock, selectors.EVENT_READ, (st, True))
            sel.register(st.sentinel, selectors.EVENT_READ, (st, False))
        self._io_in_select = True
        try:
            if until is not None and until():  # moved on while interrupt() saw no selector
                return
            events = sel.select(timeout)
        finally:
            self._io_in_select = False
        outer = self._tls.__dict__.get("dispatching", False)
        self._tls.dispatching = True
        try:
            # results first: a result sent just before the process ended must count
            for key, _ in events:
                if key.data is None:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                elif key.data[1] and key.data[0].sock_open:
                    self._on_readable(key.data[0])
            for key, _ in events:
                if key.data is not None and not key.data[1] and not key.data[0].exited:
                    self._on_exit(key.data[0])
        except Exception:  # never let a failure here stop the reading: every future needs it
            logger.exception("rldataflow process runtime: error reading actor replies")
        finally:
            self._tls.dispatching = outer

    def _on_readable(self, st: _ActorState) -> None:
        frames = st.frames
        try:
            more = frames.feed()
        except OSError:
            more = False
        while frames.ready:
            self._dispatch(st, *frames.ready.popleft())
        if not more:  # the process is ending: its sentinel fires next and says how
            self._selector.unregister(st.sock)
            st.sock_open = False

    def _dispatch(self, st: _ActorState, call_id: int, kind: int, body: Any) -> None:
        with self._lock:
            fut = st.pending.pop(call_id, None)
        if fut is None:  # killed meanwhile: its future has failed already
            return
        try:
            value = pickle.loads(body)
        except Exception as exc:
            err = RemoteError(f"the result of {st.handle.name}.{fut.method_name}() could not be "
                              f"unpickled in the driver: {exc!r}")
            err.__cause__ = exc
            fut._set_exception(err)
            return
        if kind == _OK:
            fut._set_result(value)
        else:
            exc, tb_text = value
            exc.__cause__ = RemoteTraceback(tb_text)
            fut._set_exception(exc)

    def _on_exit(self, st: _ActorState) -> None:
        sel = self._selector
        if st.sock_open:
            # what it sent before it ended still counts (read what is there, never wait)
            with contextlib.suppress(OSError):
                while mp_wait([st.sock], 0) and st.frames.feed():
                    while st.frames.ready:
                        self._dispatch(st, *st.frames.ready.popleft())
            sel.unregister(st.sock)
            st.sock_open = False
        sel.unregister(st.sentinel)
        st.proc.join(5)  # it has ended: this only reaps it
        exitcode = st.proc.exitcode
        with self._lock:
            st.alive = False
            if st.reason is None:
                st.reason = _describe_exit(exitcode)
            pending, st.pending = st.pending, {}
            st.outbox.clear()
            st.exited = True
            self._exited.notify_all()
        with st.send_lock:  # never close a socket another thread is writing to
            st.sock.close()
        st.frames = None
        with contextlib.suppress(ValueError):
            st.proc.close()
        self._fail(st, pending.values())

    # -- errors ------------------------------------------------------------------------------
    def _died(self, st: _ActorState) -> ActorDiedError:
        return ActorDiedError(st.handle.name, st.handle.class_name, st.reason or "the actor died")

    def _fail(self, st: _ActorState, futures: Any) -> None:
        for fut in list(futures):
            fut._set_exception(self._died(st))
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """After futures were resolved outside a read: wake the threads waiting for one."""
        with self._lock:
            if self._io_waiters or self._io_bystanders:
                self._io_cond.notify_all()

    def _unknown(self, actor: ActorHandle) -> ActorDiedError:
        return ActorDiedError(actor.name, actor.class_name,
                              "it does not belong to this runtime")

    @staticmethod
    def _pickle_error(actor: ActorHandle, method: MethodSpec, exc: Exception) -> TypeError:
        err = TypeError(f"the arguments of {actor.name}.{method_name_of(method)}() could not be "
                        f"pickled: {exc!r}")
        err.__cause__ = exc
        return err

    def _state(self, actor: ActorHandle) -> _ActorState:
        st = self._actors.get(actor.actor_id)
        if st is None:
            raise KeyError(f"{actor!r} does not belong to this runtime")
        return st

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop every actor: run queued calls and ``stop()``, then kill what is left. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            states = [st for st in self._actors.values() if not st.exited]
            for st in states:
                if st.alive:
                    st.reason = "the runtime was shut down"
        for st in states:
            if st.alive:
                self._post_stop(st)
        if not self._wait_exited(states, self.stop_timeout):
            for st in states:
                if not st.exited:
                    with contextlib.suppress(ValueError, OSError):
                        st.proc.kill()
            self._wait_exited(states, 5.0)
        # stop the threads
        with contextlib.suppress(ValueError):
            IO_DRIVERS.remove(self)
        if self._reader is not None:
            with self._lock:
                self._reader_stop = True
                self._io_cond.notify_all()
            self._wake()
            if threading.current_thread() is not self._reader:
                self._reader.join(5)
        if self._sender is not None:
            self._sender_q.put(None)
            if threading.current_thread() is not self._sender:
                self._sender.join(5)
        # whatever the reader did not see end (it should have seen them all)
        for st in states:
            if not st.exited:
                with self._lock:
                    st.alive, st.exited = False, True
                    pending, st.pending = st.pending, {}
                with contextlib.suppress(Exception):
                    st.proc.kill()
                    st.proc.join(5)
                with contextlib.suppress(Exception):
                    st.sock.close()
                self._fail(st, pending.values())
        if self._reader is not None and not self._reader.is_alive():
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self._forked_forkserver:
            _stop_forked_forkserver()
        atexit.unregister(self.shutdown)

    def _post_stop(self, st: _ActorState) -> None:
        """Ask an actor to exit after its queued calls; never block (it is killed otherwise)."""
        if not st.send_lock.acquire(timeout=0.2):
            return
        try:
            if not st.outbox and not st.exited:
                # a tiny frame, sent only if it fits in the socket buffer now
                st.sock.send(_HDR.pack(0, 0, _STOP), socket.MSG_DONTWAIT)
        except OSError:  # full (it will be killed) or gone
            pass
        finally:
            st.send_lock.release()

    def _wait_exited(self, states: list[_ActorState], timeout: float) -> bool:
        if self._reader is not None and not getattr(self._tls, "dispatching", False):
            return self.drive(lambda: all(st.exited for st in states), timeout)
        deadline = time.monotonic() + timeout
        with self._exited:
            while not all(st.exited for st in states):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._reader is None or not self._reader.is_alive():
                    return False
                self._exited.wait(remaining)
        return True

    def __repr__(self) -> str:
        alive = sum(st.alive for st in self._actors.values())
        return f"<ProcessRuntime {self.start_method}, {alive} live actors>"
