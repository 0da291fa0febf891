"""SharedMemoryRegion: NumPy, PyTorch and TensorBuffer views on one mapping
(no copies), a second mapping of the same object, registration with a real
worker, which then reads and writes the region in place."""
import asyncio
import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from conftest import INFERD, Worker
from inferd import InferdError, ModelWorkerClient, SharedMemoryRegion, TensorBuffer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("INFERD_FIXTURES", os.path.join(HERE, "..", "..", "tests", "fixtures"))
MODEL = os.path.join(FIXTURES, "models", "stories260K.gguf")


def test_views_share_one_mapping():
    with SharedMemoryRegion.create(1 << 20) as r:
        assert os.stat("/dev/shm" + r.key).st_mode & 0o777 == 0o600
        a = r.numpy(np.float32, (16, 16), offset=4096)
        a[:] = np.arange(256, dtype=np.float32).reshape(16, 16)
        t = r.torch(torch.float32, (16, 16), offset=4096)
        assert t.data_ptr() == a.ctypes.data and t[3, 4].item() == 52
        b = r.buffer(np.float32, (16, 16), offset=4096)
        assert b.data_ptr == a.ctypes.data and np.shares_memory(b.to_numpy(), a)
        t[0, 0] = -1
        assert a[0, 0] == -1
        # Another mapping of the same object sees the same bytes.
        other = SharedMemoryRegion.attach(r.key)
        assert other.size == 1 << 20
        o = other.numpy(np.float32, (16, 16), offset=4096)
        assert o.ctypes.data != a.ctypes.data and np.array_equal(o, a)
        del o
        other.close()
        assert os.path.exists("/dev/shm" + r.key)  # attached: not unlinked
        with pytest.raises(ValueError, match="outside the region"):
            r.numpy(np.float64, (1 << 20,))
        with pytest.raises(ValueError, match="outside the region"):
            r.torch(torch.int8, (4,), offset=(1 << 20) - 2)
        del a, t, b
        key = r.key
    assert not os.path.exists("/dev/shm" + key)  # made here: unlinked at close


def test_bad_regions():
    with pytest.raises(ValueError, match="expected '/NAME'"):
        SharedMemoryRegion.attach("no-slash")
    with pytest.raises(FileNotFoundError):
        SharedMemoryRegion.attach("/inferd-py-nobody-here")
    with pytest.raises(ValueError, match="size"):
        SharedMemoryRegion.create(0)
    with SharedMemoryRegion.create(4096) as r:
        with pytest.raises(ValueError, match="4097 bytes asked"):
            SharedMemoryRegion.attach(r.key, 4097)


def post(url, path, obj):
    req = urllib.request.Request(url + path, data=json.dumps(obj).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.skipif(not INFERD, reason="needs the inferd command (INFERD)")
def test_a_worker_reads_and_writes_the_region_in_place(tmp_path):
    w = Worker(tmp_path, "w", "-m", MODEL, "-m", "identity:ident")
    try:
        with SharedMemoryRegion.create(65536) as r:
            x = r.numpy(np.int32, (1000,))
            x[:] = np.arange(1000, dtype=np.int32) * 3

            async def register():
                async with ModelWorkerClient(w.url) as c:
                    r.register(c, "py-region")
                    with pytest.raises(InferdError) as e:  # the name is taken
                        r.register(c, "py-region")
                    assert e.value.status == 409
                    st = await c.status()
                    assert st["shm"]["regions"] == 1

            asyncio.run(register())
            shm = {"shared_memory_region": "py-region", "shared_memory_byte_size": 4000}
            st, body = post(w.url, "/v2/models/ident/infer", {
                "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1000],
                            "parameters": dict(shm, shared_memory_offset=0)}],
                "outputs": [{"name": "OUTPUT0",
                             "parameters": dict(shm, shared_memory_offset=32768)}]})
            assert st == 200, body
            y = r.numpy(np.int32, (1000,), offset=32768)  # written by the worker
            assert np.array_equal(y, x)
            # The worker's logits land in the region too.
            ids = r.numpy(np.int32, (5,), offset=8192)
            ids[:] = [1, 403, 407, 261, 378]
            st, body = post(w.url, "/v2/models/stories260K/infer", {
                "inputs": [{"name": "input_ids", "datatype": "INT32", "shape": [5],
                            "parameters": {"shared_memory_region": "py-region",
                                           "shared_memory_byte_size": 20,
                                           "shared_memory_offset": 8192}}],
                "outputs": [{"name": "logits",
                             "parameters": {"shared_memory_region": "py-region",
                                            "shared_memory_byte_size": 2048,
                                            "shared_memory_offset": 40960}}],
                "parameters": {"max_tokens": 0}})
            assert st == 200, body
            logits = TensorBuffer.from_numpy(r.numpy(np.float32, (1, 512), offset=40960))
            assert np.isfinite(logits.to_numpy()).all() and logits.to_numpy().std() > 0

            async def unregister():
                async with ModelWorkerClient(w.url) as c:
                    r.unregister(c)  # by the names it was registered under
                    assert (await c.status())["shm"]["regions"] == 0

            asyncio.run(unregister())
            del x, y, ids, logits
    finally:
        w.stop()
