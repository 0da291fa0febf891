"""TensorBuffer: NumPy and PyTorch memory shared with inferd without copies.

Zero copy is shown by addresses (data pointers, np.shares_memory) and by
memory: a 256 MB array through a buffer to PyTorch and back to NumPy
raises RSS by less than 5 MB.
"""
import gc
import os

import numpy as np
import pytest
import torch

import inferd
from inferd import TensorBuffer

NUMPY_TYPES = {
    np.bool_: "BOOL", np.int8: "INT8", np.int16: "INT16", np.int32: "INT32",
    np.int64: "INT64", np.uint8: "UINT8", np.uint16: "UINT16", np.uint32: "UINT32",
    np.uint64: "UINT64", np.float16: "FP16", np.float32: "FP32", np.float64: "FP64",
}
# The types PyTorch 1.13 shares with us (no uint16/32/64 there).
TORCH_TYPES = {
    torch.bool: "BOOL", torch.int8: "INT8", torch.int16: "INT16", torch.int32: "INT32",
    torch.int64: "INT64", torch.uint8: "UINT8", torch.float16: "FP16",
    torch.float32: "FP32", torch.float64: "FP64", torch.bfloat16: "BF16",
}


def sample(dtype, shape=(3, 5)):
    rng = np.random.default_rng(1)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", list(NUMPY_TYPES))
def test_numpy_round_trip_shares_memory(dtype):
    a = sample(dtype)
    b = TensorBuffer.from_numpy(a)
    assert b.dtype == NUMPY_TYPES[dtype]
    assert b.shape == a.shape and b.strides == a.strides and b.nbytes == a.nbytes
    assert b.data_ptr == a.ctypes.data and not b.readonly and b.contiguous
    v = b.to_numpy()
    assert v.dtype == a.dtype and np.shares_memory(v, a) and np.array_equal(v, a)
    d = np.from_dlpack(b)  # through DLPack
    assert np.shares_memory(d, a) and np.array_equal(d, a)
    m = memoryview(b)  # the buffer protocol
    assert m.shape == a.shape and m.tobytes() == a.tobytes() and not m.readonly


@pytest.mark.parametrize("dtype", list(TORCH_TYPES))
def test_torch_round_trip_shares_memory(dtype):
    t = (torch.randn(4, 6) * 50).to(dtype)
    b = inferd.torch_to_buffer(t)
    assert b.dtype == TORCH_TYPES[dtype] and b.shape == (4, 6)
    assert b.data_ptr == t.data_ptr()
    back = inferd.buffer_to_torch(b)
    assert back.dtype == dtype and back.data_ptr() == t.data_ptr() and torch.equal(back, t)
    if dtype == torch.bfloat16:  # NumPy has no bfloat16: a clear error, no copy
        with pytest.raises(TypeError, match="NumPy has no BF16"):
            b.to_numpy()
    else:
        n = b.to_numpy()
        assert n.ctypes.data == t.data_ptr() and np.array_equal(n, t.numpy())


def test_writes_are_seen_through_every_view():
    a = np.zeros(8, np.float32)
    b = TensorBuffer.from_numpy(a)
    t = inferd.buffer_to_torch(b)
    t[3] = 7.5
    assert a[3] == 7.5 and b.to_numpy()[3] == 7.5
    b.to_numpy()[5] = -1
    assert t[5].item() == -1


def test_non_contiguous_views_are_shared_not_copied():
    a = np.arange(60, dtype=np.int32).reshape(6, 10)
    for view in (a[:, ::3], a.T, a[::-1], a[1:5, 2:9:2], a[::-2, ::-3]):
        b = TensorBuffer.from_numpy(view)
        assert b.shape == view.shape and b.strides == view.strides
        assert b.data_ptr == view.ctypes.data
        assert b.contiguous == view.flags.c_contiguous
        v = b.to_numpy()
        assert np.shares_memory(v, a) and np.array_equal(v, view)
        d = np.from_dlpack(b)
        assert np.shares_memory(d, a) and np.array_equal(d, view)
    # A non-contiguous buffer refuses a contiguous-only request; a strided
    # one is served.
    with pytest.raises(BufferError, match="not contiguous"):
        np.frombuffer(TensorBuffer.from_numpy(a.T), dtype=np.int32)
    assert memoryview(TensorBuffer.from_numpy(a.T)).tobytes() == a.T.tobytes()
    # PyTorch's strided tensors come and go the same way.
    t = torch.arange(24.0).reshape(4, 6)[:, 1::2]
    b = inferd.torch_to_buffer(t)
    assert b.strides == (24, 8) and b.data_ptr == t.data_ptr()
    assert torch.equal(inferd.buffer_to_torch(b), t)


def test_read_only_stays_read_only():
    a = np.arange(10, dtype=np.float64)
    a.setflags(write=False)
    b = TensorBuffer.from_numpy(a)
    assert b.readonly
    v = b.to_numpy()
    assert not v.flags.writeable and np.shares_memory(v, a)
    with pytest.raises(ValueError):
        v[0] = 1
    m = memoryview(b)
    assert m.readonly
    with pytest.raises(TypeError):
        m[0] = 1.0
    with pytest.raises(BufferError, match="read-only"):
        b.__dlpack__()
    with pytest.raises(BufferError, match="read-only"):
        torch.utils.dlpack.from_dlpack(b)
    assert np.array_equal(a, np.arange(10))  # nothing was written


def test_the_memory_outlives_its_first_owner():
    a = np.arange(1000, dtype=np.int64)
    ptr = a.ctypes.data
    b = TensorBuffer.from_numpy(a)
    del a
    gc.collect()
    v = b.to_numpy()
    assert v.ctypes.data == ptr and v[999] == 999
    t = inferd.buffer_to_torch(b)
    del b, v
    gc.collect()
    assert t.data_ptr() == ptr and t[500].item() == 500
    b2 = inferd.torch_to_buffer(t)
    del t
    gc.collect()
    assert b2.to_numpy()[123] == 123


def test_unsupported_inputs_are_refused_clearly():
    with pytest.raises(TypeError, match="element format"):
        TensorBuffer.from_numpy(np.zeros(3, np.complex64))
    with pytest.raises(TypeError, match="element format"):
        TensorBuffer.from_numpy(np.zeros(3, dtype=">f4"))  # big-endian
    with pytest.raises(TypeError):
        TensorBuffer.from_numpy(object())
    with pytest.raises(ValueError, match="at most 8"):
        TensorBuffer.from_numpy(np.zeros((1,) * 9, np.float32))
    with pytest.raises(AttributeError):
        TensorBuffer.from_dlpack(np.zeros(3).tolist())
    with pytest.raises(BufferError, match="no stream"):
        TensorBuffer.from_numpy(np.zeros(3, np.float32)).__dlpack__(stream=1)


def test_bytes_and_scalars():
    raw = bytearray(b"abcdef")
    b = TensorBuffer.from_buffer(raw)  # no format: bytes
    assert b.dtype == "UINT8" and b.shape == (6,)
    b.to_numpy()[0] = ord("z")
    assert raw[0] == ord("z")
    s = TensorBuffer.from_numpy(np.float32(2.5).reshape(()))
    assert s.shape == () and s.to_numpy() == 2.5
    e = TensorBuffer.from_numpy(np.zeros((0, 4), np.float32))
    assert e.shape == (0, 4) and e.to_numpy().size == 0


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_256_mb_round_trip_does_not_copy():
    a = np.ones(256 << 20, np.uint8)  # touched: resident
    gc.collect()
    before = rss_bytes()
    b = TensorBuffer.from_numpy(a)
    t = inferd.buffer_to_torch(b)
    b2 = inferd.torch_to_buffer(t)
    n = b2.to_numpy()
    after = rss_bytes()
    assert n.ctypes.data == a.ctypes.data and np.shares_memory(n, a)
    assert int(n[12345]) == 1 and int(t[-1]) == 1
    assert after - before < 5 << 20, f"RSS grew by {(after - before) >> 20} MB"
