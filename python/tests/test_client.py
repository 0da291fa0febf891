"""The asyncio clients against real `inferd serve` processes (TCP and the
Unix socket): every call, streams and their cancel, the worker's errors and
transport errors, and the resilient client failing over when a worker is
killed (-9) in the middle of a stream."""
import asyncio
import json
import os
import signal
import subprocess

import pytest

import inferd
from conftest import Worker
from inferd import InferdError, ModelWorkerClient, ResilientModelWorkerClient

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("INFERD_FIXTURES", os.path.join(HERE, "..", "..", "tests", "fixtures"))
MODEL = os.path.join(FIXTURES, "models", "stories260K.gguf")
INFERD = os.environ.get("INFERD")
pytestmark = pytest.mark.skipif(not INFERD, reason="needs the inferd command (INFERD)")
# The sampling of `inferd generate` by default.
AS_GENERATE = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)


@pytest.fixture
def worker(tmp_path):
    w = Worker(tmp_path, "w", "-m", MODEL, "--api-key", "k")
    yield w
    w.stop()


def generate_cli(model, prompt, n, seed):
    out = subprocess.run([INFERD, "generate", "-m", model, "-p", prompt, "-n", str(n), "--seed",
                          str(seed), "--json", "-t", "1"], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)["text"]


def test_every_call_over_tcp_and_unix(worker):
    want = generate_cli(MODEL, "Once upon a time", 24, 42)

    async def run(url):
        async with ModelWorkerClient(url, api_key="k") as c:
            assert await c.health_check() is True
            assert (await c.status())["state"] == "ready"
            out = await c.complete("Once upon a time", max_tokens=24, seed=42, **AS_GENERATE)
            assert out["text"] == want and out["completion_tokens"] == 24
            assert out["finish_reason"] == "length" and out["seed"] == 42
            pieces = [p async for p in c.stream("Once upon a time", max_tokens=24, seed=42,
                                                **AS_GENERATE)]
            assert "".join(pieces) == want and len(pieces) >= 2
            msgs = [{"role": "user", "content": "Tell me a story"}]
            a = await c.chat(msgs, max_tokens=8, seed=1)
            b = "".join([p async for p in c.chat_stream(msgs, max_tokens=8, seed=1)])
            assert a["text"] and a["text"] == b
            # Leaving a stream cancels it; the worker serves on.
            n = 0
            async for _ in c.stream("Once upon a time", max_tokens=200, ignore_eos=True):
                n += 1
                if n == 2:
                    break
            assert (await c.complete("Once", max_tokens=2))["completion_tokens"] == 2
            # The worker's errors, with its code and status.
            with pytest.raises(InferdError) as e:
                await c.complete("Once", temperature=9)
            assert e.value.code == "invalid_value" and e.value.status == 400
            assert e.value.param == "temperature" and "temperature: 9" in str(e.value)
            assert type(e.value) is inferd.InvalidRequestError
            with pytest.raises(InferdError) as e:
                await c.complete("Once", model="nope")
            assert e.value.code == "model_not_found" and e.value.status == 404
            assert type(e.value) is inferd.NotFoundError
            with pytest.raises(TypeError, match="unexpected keyword 'bogus'"):
                await c.complete("Once", bogus=1)
        async with ModelWorkerClient(url) as c:  # no key
            with pytest.raises(InferdError) as e:
                await c.status()
            assert e.value.code == "invalid_api_key" and e.value.status == 401
            assert type(e.value) is inferd.AuthenticationError

    asyncio.run(run(worker.url))
    asyncio.run(run(worker.unix_url))


def test_transport_errors_and_failover_to_a_live_worker(worker, tmp_path):
    dead = f"unix://{tmp_path}/nobody.sock"

    async def run():
        async with ModelWorkerClient(dead) as c:
            with pytest.raises(InferdError) as e:
                await c.health_check()
            assert e.value.code == "transport_error" and e.value.status == 502
            assert type(e.value) is inferd.TransportError
        async with ResilientModelWorkerClient([dead, worker.url], api_key="k") as r:
            out = await r.complete("Once upon a time", max_tokens=4, seed=3)
            assert out["completion_tokens"] == 4
            st = r.stats()
            assert st["attempts"] == 2 and st["failovers"] == 1
            assert st["endpoints"][0]["failures"] == 1 and st["endpoints"][1]["successes"] == 1
            # A 400 is not retried.
            with pytest.raises(InferdError) as e:
                await r.complete("Once", temperature=9)
            assert e.value.status == 400 and r.stats()["attempts"] == st["attempts"] + 1
        async with ResilientModelWorkerClient([dead], deadline_ms=300, max_retries=1000) as r:
            with pytest.raises(InferdError) as e:
                await r.health_check()
            assert e.value.code == "timeout" and "deadline of 300 ms passed" in str(e.value)
            assert type(e.value) is inferd.DeadlineExceededError

    asyncio.run(run())
    with pytest.raises(ValueError, match="max_retries"):
        ResilientModelWorkerClient([dead], max_retries=-1)


def test_a_worker_killed_mid_stream(tmp_path):
    slow = str(tmp_path / "slow.gguf")
    subprocess.run([INFERD, "make-model", "--dim", "768", "--layers", "8", "--heads", "12",
                    "--ffn", "2048", "--vocab-from", MODEL, "--type", "Q8_0", "-o", slow],
                   check=True, capture_output=True)
    want = generate_cli(slow, "Once upon a time", 200, 7)
    a = Worker(tmp_path, "a", "-m", slow)
    b = Worker(tmp_path, "b", "-m", slow)
    try:
        async def run():
            async with ResilientModelWorkerClient([a.url, b.url],
                                                  breaker_failures=1,
                                                  breaker_cooldown_ms=60000) as r:
                pieces = []
                async for p in r.stream("Once upon a time", max_tokens=200, seed=7,
                                        **AS_GENERATE):
                    pieces.append(p)
                    if len(pieces) == 100:
                        os.kill(a.proc.pid, signal.SIGKILL)  # A serves the first call
                return pieces, r.stats()

        pieces, st = asyncio.run(run())
        assert a.proc.wait() == -signal.SIGKILL
        assert "".join(pieces) == want  # nothing lost, nothing repeated
        assert st["failovers"] == 1 and st["replayed"] >= 100
        assert st["endpoints"][0]["opened"] == 1 and st["endpoints"][0]["breaker"] == "open"
    finally:
        a.stop()
        b.stop()


def test_module_exports():
    assert inferd.ModelWorkerClient is ModelWorkerClient
    kinds = ["AuthenticationError", "ConflictError", "DeadlineExceededError", "InternalError",
             "InvalidRequestError", "NotFoundError", "OverloadedError", "RequestCancelledError",
             "TransportError", "UnavailableError"]
    for k in kinds:
        assert issubclass(getattr(inferd, k), InferdError) and k in inferd.__all__
    with pytest.raises(ValueError, match="not connected"):
        asyncio.run(ModelWorkerClient("http://127.0.0.1:1").status())
