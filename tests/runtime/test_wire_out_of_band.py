"""Large arrays cross the process wire out of band (pickle protocol 5) and round-trip exactly."""

import socket
import threading

import numpy as np
import pytest

from rldataflow.data import SampleBatch
from rldataflow.runtime import get_runtime
from rldataflow.runtime.wire import OK, FrameReader, frame, loads, send_frame

BIG = 1 << 20


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "frames": rng.integers(0, 256, (40, 84, 84, 4), dtype=np.uint8),     # ~4.5 MB
        "f64": rng.standard_normal(BIG // 8 + 3),                             # odd length
        "small": np.arange(7, dtype=np.int16),                                # in band
        "fortran": np.asfortranarray(rng.standard_normal((300, 301))),
        "strided": rng.integers(0, 9, (600, 500), dtype=np.int32)[::2, ::3],  # not contiguous
        "empty": np.zeros((0, 84, 84, 4), np.uint8),
        "bools": rng.random(BIG) < 0.5,
    }


def _check(got, want):
    assert got.keys() == want.keys()
    for key, arr in want.items():
        out = got[key]
        assert out.dtype == arr.dtype and out.shape == arr.shape, key
        np.testing.assert_array_equal(out, arr, err_msg=key)
        assert out.flags.writeable, key
        assert out.ctypes.data % min(arr.dtype.itemsize, 8) == 0, key  # aligned for torch


@pytest.mark.parametrize("parts", [False, True])
def test_frames_round_trip_through_a_socket(parts):
    want = _arrays()
    batch = SampleBatch({"obs": want["frames"], "rewards": np.ones(40, np.float32)},
                        stats={"episode_returns": [1.5]}, info={"weights_version": 3})
    a, b = socket.socketpair()
    out = frame(5, OK, (want, batch), plain=True, parts=parts)
    assert isinstance(out, list) == parts
    sender = threading.Thread(target=send_frame, args=(a, out))
    sender.start()
    call_id, kind, body = FrameReader(b).next()
    sender.join()
    a.close(), b.close()
    assert (call_id, kind) == (5, OK)
    got, got_batch = loads(body)
    _check(got, want)
    np.testing.assert_array_equal(got_batch["obs"], want["frames"])
    assert got_batch.stats == {"episode_returns": [1.5]} and got_batch.info["weights_version"] == 3
    # the big arrays are views of the received frame, not copies of it
    assert got["frames"].base is not None


def test_small_frames_and_the_old_path_stay_in_band(monkeypatch):
    small = frame(1, OK, np.arange(10), plain=True)
    assert isinstance(small, bytes) and loads(small[17:]).tolist() == list(range(10))
    monkeypatch.setenv("RLDATAFLOW_WIRE_OUT_OF_BAND", "0")
    old = frame(1, OK, _arrays(), plain=True, parts=True)
    assert not isinstance(old, list)
    _check(loads(bytes(old[17:])), _arrays())


class Echo:
    def echo(self, value):
        return value

    def nbytes(self, value):
        return {k: (v.dtype.str, v.shape, int(v.sum())) for k, v in value.items()}


def test_the_process_runtime_round_trips_arrays_both_ways():
    rt = get_runtime("process")
    try:
        actor = rt.create_actor(Echo)
        want = _arrays()
        _check(actor.call("echo", want).result(timeout=60), want)
        # driver -> actor too: the actor saw the same arrays
        seen = actor.call("nbytes", want).result(timeout=60)
        assert seen == {k: (v.dtype.str, v.shape, int(v.sum())) for k, v in want.items()}
    finally:
        rt.shutdown()
