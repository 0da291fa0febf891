"""In-process models: the process registry shared by threads, generation
equal to `inferd generate`, tokenize/detokenize, logits and hidden states,
asyncio, and the errors."""
import asyncio
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

import inferd

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("INFERD_FIXTURES", os.path.join(HERE, "..", "..", "tests", "fixtures"))
MODEL = os.path.join(FIXTURES, "models", "stories260K.gguf")
INFERD = os.environ.get("INFERD") or shutil.which("inferd")


def generate_cli(prompt, n, seed):
    """`inferd generate --json` for the same request (its default sampling)."""
    if not INFERD:
        pytest.skip("no inferd command (set INFERD)")
    out = subprocess.run([INFERD, "generate", "-m", MODEL, "-p", prompt, "-n", str(n),
                          "--seed", str(seed), "--json", "-t", "1"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture
def model():
    with inferd.get_or_load(MODEL, threads=1) as m:
        yield m


def test_generation_equals_inferd_generate(model):
    ref = generate_cli("Once upon a time", 24, 42)
    out = model.complete("Once upon a time", max_tokens=24, seed=42)
    assert out["text"] == ref["text"] and out["ids"] == ref["ids"]
    assert out["finish_reason"] == "length" and out["completion_tokens"] == 24
    assert out["prompt_tokens"] == 5 and out["seed"] == 42
    # The iterator gives the same tokens one by one.
    gen = model.generate("Once upon a time", max_tokens=24, seed=42)
    toks = list(gen)
    assert [t.id for t in toks if t.id >= 0] == ref["ids"]
    assert "".join(t.text for t in toks) == ref["text"]
    assert gen.result["completion_tokens"] == 24
    # Token ids in, greedy: the first token is the argmax of the logits.
    ids = model.tokenize("Once upon a time")
    assert ids == ref["prompt_ids"]
    greedy = model.complete(ids, max_tokens=4, temperature=0)
    logits = model.logits(ids).to_numpy()
    assert logits.shape == (len(ids), model.n_vocab) and logits.dtype == np.float32
    assert int(np.argmax(logits[-1])) == greedy["ids"][0]
    hidden = model.hidden(ids)
    assert hidden.dtype == "FP32" and hidden.shape == (len(ids), 64)


def test_tokenize_detokenize(model):
    ids = model.tokenize("The cat sat on the mat", add_special=False)
    assert model.detokenize(ids) == "The cat sat on the mat"
    assert model.tokenize("x")[0] == 1  # BOS
    assert model.detokenize([]) == ""


def test_one_instance_for_every_caller_and_thread():
    handles, errors = [], []
    barrier = threading.Barrier(8)

    def load():
        try:
            barrier.wait()
            handles.append(inferd.get_or_load(MODEL, threads=1))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    info = [m for m in inferd.registry_info() if m["id"] == MODEL]
    assert len(info) == 1 and info[0]["handles"] == 8 and info[0]["state"] == "ready"
    # All share it, generating at once: each gets what it gets alone.
    alone = handles[0].complete("Once upon a time", max_tokens=16, seed=7)["text"]
    texts = [None] * 8

    def run(i):
        texts[i] = handles[i].complete("Once upon a time", max_tokens=16, seed=7)["text"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts == [alone] * 8
    for h in handles:
        h.close()
    info = [m for m in inferd.registry_info() if m["id"] == MODEL]
    assert info[0]["handles"] == 0  # kept alive for keep_alive_ms, no handle


def test_asyncio_generation(model):
    want = [t.id for t in model.generate("Once upon a time", max_tokens=12, seed=3)]

    async def collect():
        return [t.id async for t in model.agenerate("Once upon a time", max_tokens=12, seed=3)]

    assert asyncio.run(collect()) == want


def test_cancel(model):
    gen = model.generate("Once upon a time", max_tokens=400, ignore_eos=True, seed=1)
    next(gen)
    gen.cancel()
    with pytest.raises(inferd.InferdError) as e:
        for _ in gen:
            pass
    assert e.value.code == "cancelled" and e.value.status == 499


def test_errors(model):
    with pytest.raises(inferd.InferdError) as e:
        model.complete("")
    assert e.value.code == "invalid_value" and e.value.param == "prompt"
    assert "prompt: it is empty" in str(e.value)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.complete([1, 99999])
    with pytest.raises(TypeError, match="unexpected keyword 'bogus'"):
        model.complete("x", bogus=1)
    with pytest.raises(ValueError, match="seed"):
        model.complete("x", seed=-1)
    with pytest.raises(inferd.InferdError) as e:
        inferd.get_or_load("/nonexistent/model.gguf")
    assert e.value.status in (404, 500) and "nonexistent" in str(e.value)
    with pytest.raises(ValueError, match="slots"):
        inferd.get_or_load(MODEL, slots=0)
    with pytest.raises(RuntimeError, match="exists already"):
        inferd.configure(budget_bytes=1 << 30)
    m = inferd.get_or_load(MODEL)
    m.close()
    assert m.closed
    with pytest.raises(ValueError, match="closed"):
        m.tokenize("x")
    m.close()  # twice is fine
