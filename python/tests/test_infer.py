"""KServe inference from the Python client against a real worker: NumPy,
PyTorch and BYTES inputs as binary data, inputs read in place from a
registered SharedMemoryRegion, outputs written into it, a language model's
input_ids and logits, the errors, inputs staged into a region of the
client's when the worker is local, and the resilient client's inference."""
import asyncio
import glob
import json
import os
import urllib.request

import numpy as np
import pytest
import torch

from conftest import INFERD, Worker
from inferd import InferdError, ModelWorkerClient, ResilientModelWorkerClient, SharedMemoryRegion

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("INFERD_FIXTURES", os.path.join(HERE, "..", "..", "tests", "fixtures"))
MODEL = os.path.join(FIXTURES, "models", "stories260K.gguf")
pytestmark = pytest.mark.skipif(not INFERD, reason="needs the inferd command (INFERD)")


@pytest.fixture
def worker(tmp_path):
    w = Worker(tmp_path, "w", "-m", MODEL, "-m", "identity:ident")
    yield w
    w.stop()


def test_infer(worker):
    async def run(url):
        async with ModelWorkerClient(url) as c:
            a = np.random.default_rng(1).standard_normal((3, 100)).astype(np.float32)
            t = torch.arange(-50, 50, dtype=torch.int8)
            m = np.array([True, False, True])
            out = await c.infer("ident", {"INPUT0": a, "INPUT1": t, "INPUT2": m,
                                          "INPUT3": ["once", b"\x00\xff", ""]},
                                ["OUTPUT0", "OUTPUT1", "OUTPUT2", "OUTPUT3"])
            assert out["OUTPUT0"].dtype == np.float32 and np.array_equal(out["OUTPUT0"], a)
            assert np.array_equal(out["OUTPUT1"], t.numpy())
            assert out["OUTPUT2"].dtype == np.bool_ and np.array_equal(out["OUTPUT2"], m)
            assert out["OUTPUT3"] == [b"once", b"\x00\xff", b""]
            j = await c.infer("ident", {"INPUT0": a}, {"OUTPUT0": "json"})
            assert np.array_equal(j["OUTPUT0"], a)

            # Shared memory: inputs read in place, outputs written in place.
            with SharedMemoryRegion.create(1 << 20) as r:
                r.register(c, "py-infer")
                x = r.numpy(np.float32, (1000,))
                x[:] = np.arange(1000) * 0.5
                out = await c.infer("ident", {"INPUT0": x},
                                    {"OUTPUT0": (r, 65536, 4000)})
                y = out["OUTPUT0"]
                assert y.ctypes.data == r.base + 65536 and np.array_equal(y, x)
                out = await c.infer("ident", {"INPUT0": x}, {"OUTPUT0": (r, 0, 4000)})
                assert out["OUTPUT0"].ctypes.data == x.ctypes.data  # in place
                # A language model: ids from the region, logits into it.
                ids = r.numpy(np.int32, (5,), offset=8192)
                ids[:] = [1, 403, 407, 261, 378]
                out = await c.infer("stories260K", {"input_ids": ids},
                                    {"logits": (r, 131072, 2048), "output_ids": None},
                                    params={"max_tokens": 4, "temperature": 0})
                lg = out["logits"]
                assert lg.shape == (1, 512) and lg.ctypes.data == r.base + 131072
                assert out["output_ids"].shape == (4,)
                assert int(np.argmax(lg[0])) == int(out["output_ids"][0])
                assert c.last_answer["parameters"]["completion_tokens"] == 4
                # Errors: the client's own, then the worker's.
                with pytest.raises(ValueError, match="not contiguous"):
                    await c.infer("ident", {"INPUT0": a[:, ::2]}, ["OUTPUT0"])
                with SharedMemoryRegion.create(4096) as other:
                    with pytest.raises(ValueError, match="not in a region registered"):
                        await c.infer("ident", {"INPUT0": a}, {"OUTPUT0": (other, 0, 1200)})
                with pytest.raises(InferdError) as e:
                    await c.infer("ident", {"INPUT0": x}, {"OUTPUT0": (r, 65536, 100)})
                assert e.value.status == 400 and "should be at least 4000 bytes" in str(e.value)
                with pytest.raises(InferdError) as e:
                    await c.infer("ident", {"INPUT0": a}, ["OUTPUT9"])
                assert e.value.code == "invalid_value" and "no output 'OUTPUT9'" in str(e.value)
                r.unregister(c)
                del x, y, ids, lg, out

    asyncio.run(run(worker.url))
    asyncio.run(run(worker.unix_url))


def test_resilient_infer(worker, tmp_path):
    dead = f"unix://{tmp_path}/nobody.sock"

    async def run():
        async with ResilientModelWorkerClient([dead, worker.unix_url], retry_delay_ms=1) as r:
            a = np.linspace(-1, 1, 300, dtype=np.float32).reshape(3, 100)
            out = await r.infer("ident", {"INPUT0": a, "INPUT3": ["x", b"yz"]},
                                ["OUTPUT0", "OUTPUT3"])
            assert np.array_equal(out["OUTPUT0"], a) and out["OUTPUT3"] == [b"x", b"yz"]
            st = r.stats()
            assert st["attempts"] == 2 and st["failovers"] == 1
            # Greedy logits of a language model, as one worker gives them.
            ids = np.array([1, 403, 407, 261, 378], dtype=np.int32)
            got = await r.infer("stories260K", {"input_ids": ids}, ["logits"],
                                params={"max_tokens": 0})
            async with ModelWorkerClient(worker.url) as c:
                want = await c.infer("stories260K", {"input_ids": ids}, ["logits"],
                                     params={"max_tokens": 0})
            assert np.array_equal(got["logits"], want["logits"])
            # A region belongs to one worker: refused before anything is sent.
            with SharedMemoryRegion.create(4096) as reg:
                with pytest.raises(TypeError, match="one worker's client"):
                    reg.register(r, "no")
                with pytest.raises(ValueError, match="not in a region registered"):
                    await r.infer("ident", {"INPUT0": a}, {"OUTPUT0": (reg, 0, 1200)})
            # The worker's 4xx comes back at once: one try at the live worker.
            n = r.stats()["endpoints"][1]["attempts"]
            with pytest.raises(InferdError) as e:
                await r.infer("ident", {"INPUT0": a}, ["OUTPUT9"])
            assert e.value.status == 400 and r.stats()["endpoints"][1]["attempts"] == n + 1

    asyncio.run(run())


def _worker_regions(w):
    with urllib.request.urlopen(w.url + "/v1/status", timeout=5) as r:
        return json.load(r)["shm"]["regions"]


def _staging_objects():
    return glob.glob(f"/dev/shm/inferd-py-{os.getpid()}-*")


def test_local_inputs_go_through_a_staging_region(worker):
    """A local worker gets big inputs by reference from the client's staging
    region (one copy here, not the bytes through the socket); small ones,
    shm="never" and a remote-looking worker go as binary data."""
    before = set(_staging_objects())

    async def run(url):
        big = np.arange(200_000, dtype=np.float32)  # 800 KB
        small = np.arange(10, dtype=np.int64)
        async with ModelWorkerClient(url) as c:
            out = await c.infer("ident", {"INPUT0": big, "INPUT1": small}, ["OUTPUT0", "OUTPUT1"])
            assert c.last_via == {"INPUT0": "staged", "INPUT1": "binary"}
            assert np.array_equal(out["OUTPUT0"], big) and np.array_equal(out["OUTPUT1"], small)
            # Calls at once each get a region; afterwards they are reused.
            xs = [np.full(100_000, i, dtype=np.float64) for i in range(3)]
            outs = await asyncio.gather(*[c.infer("ident", {"INPUT0": x}, ["OUTPUT0"])
                                          for x in xs])
            assert all(np.array_equal(o["OUTPUT0"], x) for o, x in zip(outs, xs))
            n = _worker_regions(worker)
            assert 1 <= n <= 3
            for x in xs:
                out = await c.infer("ident", {"INPUT0": x}, ["OUTPUT0"])
                assert np.array_equal(out["OUTPUT0"], x) and c.last_via["INPUT0"] == "staged"
            assert _worker_regions(worker) == n and c.shm_fallback is None
        # close() unregistered and unlinked them.
        assert _worker_regions(worker) == 0 and set(_staging_objects()) == before
        async with ModelWorkerClient(url, shm="never") as c:
            out = await c.infer("ident", {"INPUT0": big}, ["OUTPUT0"])
            assert c.last_via == {"INPUT0": "binary"} and np.array_equal(out["OUTPUT0"], big)

    asyncio.run(run(worker.unix_url))
    asyncio.run(run(worker.url))
    with pytest.raises(ValueError, match="shm: expected 'auto' or 'never'"):
        ModelWorkerClient(worker.url, shm="always")


def test_staging_falls_back_and_survives_the_worker_dropping_it(tmp_path):
    """A worker without shared memory refuses the region: the inputs go as
    binary data (once refused, from then on). A worker that dropped the
    idle region after --shm-ttl gets it registered again."""
    before = set(_staging_objects())
    big = np.arange(50_000, dtype=np.int32)
    off = Worker(tmp_path, "off", "-m", "identity:ident", "--shm", "off")
    ttl = Worker(tmp_path, "ttl", "-m", "identity:ident", "--shm-ttl", "1")
    try:
        async def run():
            async with ModelWorkerClient(off.unix_url) as c:
                for _ in range(2):
                    out = await c.infer("ident", {"INPUT0": big}, ["OUTPUT0"])
                    assert np.array_equal(out["OUTPUT0"], big)
                    assert c.last_via == {"INPUT0": "binary"}
                assert "the worker refused a region" in c.shm_fallback
            assert set(_staging_objects()) == before
            async with ModelWorkerClient(ttl.unix_url) as c:
                await c.infer("ident", {"INPUT0": big}, ["OUTPUT0"])
                assert _worker_regions(ttl) == 1
                for _ in range(50):  # the worker sweeps every second
                    if _worker_regions(ttl) == 0:
                        break
                    await asyncio.sleep(0.1)
                assert _worker_regions(ttl) == 0
                out = await c.infer("ident", {"INPUT0": big + 1}, ["OUTPUT0"])
                assert np.array_equal(out["OUTPUT0"], big + 1)
                assert c.last_via == {"INPUT0": "staged"} and _worker_regions(ttl) == 1

        asyncio.run(run())
    finally:
        off.stop()
        ttl.stop()
