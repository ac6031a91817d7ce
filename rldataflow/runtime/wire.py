"""The wire format between a driver and its actor processes, and the pickling that fills it.

It lives apart from both ends so that the driver (:mod:`rldataflow.runtime.process`) and the
actor (:mod:`rldataflow.runtime.child`) cannot disagree on it, and so that the ray runtime can
reuse the one decision that is not about sockets at all: which calls the C pickler may send
(:func:`is_small_call`).

A stream socket pair per actor carries frames, each :data:`HEADER` (body length, call id, kind)
followed by the body; a receiver (:class:`FrameReader`) reads whatever has arrived in one system
call and parses every complete frame in it, so calls in flight are batched.

* driver -> actor: the driver's ``sys.path`` and then the pickled ``(cls, args, kwargs)`` (both
  :data:`INIT`); then :data:`CALL` frames (body: the pickled ``(method, args, kwargs)``;
  ``ProcessRuntime.call_many`` pickles it once and sends the same bytes to every actor) or
  :data:`STOP`.
* actor -> driver: :data:`READY` / :data:`CTOR_ERR` once, then :data:`OK` (body: the pickled
  result) or :data:`ERR` (body: the pickled ``(exception, traceback text)``) per call, in call
  order.

Pickling reuses one pickler per thread (creating one costs more than a small call) and takes
the C pickler instead of cloudpickle wherever both would produce the same bytes.
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
import sys
import threading
import types
from collections import deque
from typing import Any

import cloudpickle

HEADER = struct.Struct("<QqB")  # body length, call id, frame kind
# frame kinds, driver -> actor
INIT, CALL, STOP = 0, 1, 2
# frame kinds, actor -> driver
OK, ERR, READY, CTOR_ERR = 0, 1, 2, 3

PICKLE_PROTOCOL = 5
#: a frame (or ``call_many`` payload) this large is sent from its own buffer, never copied
ZERO_COPY_SIZE = 64 * 1024

_CHUNK = 64 * 1024       # the initial receive buffer (it grows for larger frames)
_BIG = 1024 * 1024       # a frame this large is received straight into its own buffer

#: a buffer this large (a big numpy array's data) travels out of band: after the pickle, not in it
OUT_OF_BAND_SIZE = 64 * 1024
#: the first bytes of a body holding out-of-band buffers (a pickle never starts with a 0 byte)
_OOB_MAGIC = b"\0RLOOB\0\0"
_U64 = struct.Struct("<Q")
_ALIGN = 64  # out-of-band buffers start at multiples of this in a body (aligned arrays)

_tls = threading.local()  # a reusable pickler per thread (creating one costs more than a call)
_NO_HDR = b"\0" * HEADER.size

_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
_BY_REFERENCE: dict[Any, bool] = {}  # function -> can plain pickle send it by name?


def importable_by_name(fn: Any) -> bool:
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
        # a module registered with cloudpickle.register_pickle_by_value (or one inside such
        # a package) is sent by value: the child may not be able to import it
        by_value = cloudpickle.list_registry_pickle_by_value()
        known = (isinstance(fn, types.FunctionType) and target is fn
                 and not any(module_name == m or str(module_name).startswith(m + ".")
                             for m in by_value))
        if len(_BY_REFERENCE) < 4096:
            _BY_REFERENCE[fn] = known
    return known


def is_small_call(method: Any, args: tuple, kwargs: dict) -> bool:
    """A method name or an importable function, scalar arguments (a gather's next-item
    request): the C pickler sends it exactly as cloudpickle would, several times faster."""
    return ((method.__class__ is str or importable_by_name(method))
            and all(a.__class__ in _SCALARS for a in args)
            and all(v.__class__ in _SCALARS for v in kwargs.values()))


def call_frame(call_id: int, method: Any, args: tuple, kwargs: dict) -> bytes | memoryview:
    """The frame of a call: small calls with the C pickler, anything else with cloudpickle."""
    if is_small_call(method, args, kwargs):
        body = pickle.dumps((method, args, kwargs), protocol=PICKLE_PROTOCOL)
        return HEADER.pack(len(body), call_id, CALL) + body
    return frame(call_id, CALL, (method, args, kwargs))


def result_frame(call_id: int, value: Any) -> bytes | memoryview | list:
    """The frame of a call's result (in an actor). Pickled with the C pickler when that works:
    it fails (PicklingError, AttributeError...) on exactly what cloudpickle would send by value
    instead (lambdas, classes shipped from the driver's ``__main__``, local functions), and
    then cloudpickle does it. Not while some module is registered to go by value."""
    if not cloudpickle.list_registry_pickle_by_value():
        try:
            return frame(call_id, OK, value, plain=True, parts=True)
        except Exception:
            pass
    return frame(call_id, OK, value, parts=True)


def out_of_band_enabled() -> bool:
    """Large buffers go out of band unless ``RLDATAFLOW_WIRE_OUT_OF_BAND=0`` (the old path,
    kept to measure against: ``benchmarks/transfer.py``)."""
    return os.environ.get("RLDATAFLOW_WIRE_OUT_OF_BAND", "1") != "0"


def loads(body: Any) -> Any:
    """Unpickle a frame's body. Out-of-band buffers become the arrays' memory without a copy
    (views of ``body``, writeable when ``body`` is a ``bytearray``, as large frames are)."""
    if body[:len(_OOB_MAGIC)] != _OOB_MAGIC:
        return pickle.loads(body)
    if isinstance(body, bytes):  # a small frame: copy once so the arrays are writeable
        body = bytearray(body)
    view = memoryview(body)
    pos = len(_OOB_MAGIC)
    (count,) = _U64.unpack_from(view, pos)
    lengths = [_U64.unpack_from(view, pos + 8 * (i + 1))[0] for i in range(count + 1)]
    pos += 8 * (count + 2)
    data = view[pos:pos + lengths[0]]
    pos += lengths[0]
    buffers = []
    for length in lengths[1:]:
        pos += -pos % _ALIGN
        buffers.append(view[pos:pos + length])
        pos += length
    return pickle.loads(data, buffers=buffers)


def frame(call_id: int, kind: int, obj: Any, plain: bool = False,
          parts: bool = False) -> bytes | memoryview | list:
    """One frame holding ``obj`` cloudpickled (pickled straight after its header); ``plain``:
    with the C pickler (only for objects it pickles as cloudpickle would).

    Buffers of at least :data:`OUT_OF_BAND_SIZE` bytes (numpy arrays' data, with pickle
    protocol 5) are not copied into the pickle: they follow it in the frame, and with ``parts``
    the frame is returned as a list of pieces to send in order, the arrays' own memory among
    them (no copy at all before the socket)."""
    key = "plain_pickler" if plain else "pickler"
    cached = getattr(_tls, key, None)
    setattr(_tls, key, None)  # taken: a nested use (from some __reduce__) makes its own
    if cached is None:
        buf = io.BytesIO()
        oob: list = []

        def keep_small(pb: pickle.PickleBuffer, oob: list = oob) -> bool:
            # True: pickled in band (small); False: collected here, sent after the pickle
            if not out_of_band_enabled() or pb.raw().nbytes < OUT_OF_BAND_SIZE:
                return True
            oob.append(pb)
            return False

        cached = (buf, (pickle.Pickler if plain else cloudpickle.Pickler)(
            buf, protocol=PICKLE_PROTOCOL, buffer_callback=keep_small), oob)
    buf, pickler, oob = cached
    oob.clear()
    buf.seek(0)
    buf.truncate()
    buf.write(_NO_HDR)
    pickler.dump(obj)  # if this fails, the pickler is dropped: it may be in any state
    pickler.clear_memo()
    if oob:
        out = _oob_frame(call_id, kind, buf, oob, parts)
        oob.clear()
        setattr(_tls, key, cached)
        return out
    size = buf.tell()
    if size > ZERO_COPY_SIZE:  # large: hand this buffer over rather than copy it
        view = buf.getbuffer()
        HEADER.pack_into(view, 0, size - HEADER.size, call_id, kind)
        return view
    with buf.getbuffer() as view:
        out = HEADER.pack(size - HEADER.size, call_id, kind) + view[HEADER.size:]
    setattr(_tls, key, cached)
    return out


def _oob_frame(call_id: int, kind: int, buf: io.BytesIO, oob: list,
               parts: bool) -> bytes | list:
    with buf.getbuffer() as view:
        data = bytes(view[HEADER.size:])
    raws = [pb.raw() for pb in oob]
    meta = _OOB_MAGIC + _U64.pack(len(raws)) + b"".join(
        _U64.pack(n) for n in (len(data), *(r.nbytes for r in raws)))
    pieces: list = [meta, data]
    pos = len(meta) + len(data)
    for raw in raws:
        pad = -pos % _ALIGN
        if pad:
            pieces.append(b"\0" * pad)
        pieces.append(raw)
        pos += pad + raw.nbytes
    pieces.insert(0, HEADER.pack(pos, call_id, kind))
    if parts:
        return pieces
    return b"".join(pieces)


def send_frame(sock: socket.socket, out: Any) -> None:
    """``sock.sendall`` of a frame, or of each piece of one made with ``parts=True``."""
    if isinstance(out, list):
        for piece in out:
            sock.sendall(piece)
    else:
        sock.sendall(out)


class FrameReader:
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
        buf, start, end, hs = self.buf, self.start, self.end, HEADER.size
        while end - start >= hs:
            length, call_id, kind = HEADER.unpack_from(buf, start)
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
