"""In-process models: the process registry shared by threads, generation
equal to `inferd generate`, tokenize/detokenize, logits and hidden states,
asyncio, and the errors."""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time

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
    assert isinstance(e.value, inferd.RequestCancelledError)


def test_errors(model):
    with pytest.raises(inferd.InferdError) as e:
        model.complete("")
    assert e.value.code == "invalid_value" and e.value.param == "prompt"
    assert isinstance(e.value, inferd.InvalidRequestError)
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


def test_keep_alive_and_budget_as_in_c(tmp_path):
    """In a fresh process (the budget is set before the first load): a
    keep-alive of 0 unloads with the last handle, an idle model kept alive
    is evicted least recently used to fit the budget, and a model that does
    not fit even then is refused with the bytes it needs."""
    code = """
import json, sys, inferd
M = sys.argv[1]
probe = inferd.get_or_load(M, id="probe", keep_alive_ms=0, threads=1)
size = [m for m in inferd.registry_info() if m["id"] == "probe"][0]
size = size["weight_bytes"] + size["state_bytes"]
probe.close()
out = {"after_close_0": [m["id"] for m in inferd.registry_info()]}
print(json.dumps(dict(out, size=size)))
"""
    env = dict(os.environ)
    first = subprocess.run([sys.executable, "-c", code, MODEL], check=True,
                           capture_output=True, text=True, env=env)
    got = json.loads(first.stdout)
    assert got["after_close_0"] == []  # keep-alive 0: gone with its handle
    size = got["size"]
    code = """
import json, sys, inferd
M, size = sys.argv[1], int(sys.argv[2])
inferd.configure(budget_bytes=2 * size + size // 2)  # room for two
ids = lambda: sorted(m["id"] for m in inferd.registry_info())
a = inferd.get_or_load(M, id="a", keep_alive_ms=-1, threads=1)
b = inferd.get_or_load(M, id="b", keep_alive_ms=-1, threads=1)
a.close(); b.close()           # both idle, kept; a used least recently
kept = ids()
c = inferd.get_or_load(M, id="c", keep_alive_ms=-1, threads=1)   # evicts a
after_c = ids()
d = inferd.get_or_load(M, id="d", keep_alive_ms=-1, threads=1)   # evicts b
after_d = ids()
try:
    inferd.get_or_load(M, id="e", threads=1)   # c and d are held: no room
    refused = refused_class = None
except inferd.InferdError as e:
    refused = [e.code, e.status, str(e)]
    refused_class = type(e).__name__
print(json.dumps(dict(kept=kept, after_c=after_c, after_d=after_d, refused=refused,
                      refused_class=refused_class,
                      still=c.complete("Once", max_tokens=2, seed=1)["completion_tokens"])))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code, MODEL, str(size)], check=True,
                                    capture_output=True, text=True, env=env).stdout)
    assert out["kept"] == ["a", "b"]
    assert out["after_c"] == ["b", "c"] and out["after_d"] == ["c", "d"]
    code_, status, msg = out["refused"]
    assert code_ == "quota" and status == 507 and "budget" in msg, msg
    assert out["refused_class"] == "OverloadedError"
    assert out["still"] == 2


def test_the_gil_is_released_while_the_engine_works(tmp_path):
    """A pure-Python thread keeps running (it needs the GIL) while a call
    computes: no gap in its progress near the length of the call."""
    if not INFERD:
        pytest.skip("no inferd command (set INFERD)")
    slow = str(tmp_path / "slow.gguf")
    subprocess.run([INFERD, "make-model", "--dim", "768", "--layers", "8", "--heads", "12",
                    "--ffn", "2048", "--vocab-from", MODEL, "--type", "Q8_0", "-o", slow],
                   check=True, capture_output=True)
    with inferd.get_or_load(slow, threads=1, keep_alive_ms=0) as m:
        ids = m.tokenize("Once upon a time " * 100)[:384]

        def spun_through(call):
            stamps, stop = [], threading.Event()

            def spin():
                while not stop.is_set():
                    stamps.append(time.perf_counter())

            t = threading.Thread(target=spin)
            t.start()
            while not stamps:
                time.sleep(0.001)
            t0 = time.perf_counter()
            call()
            t1 = time.perf_counter()
            stop.set()
            t.join()
            inside = [t0] + [s for s in stamps if t0 < s < t1] + [t1]
            gap = max(b - a for a, b in zip(inside, inside[1:]))
            return t1 - t0, gap, len(inside) - 2

        for name, call in [("logits", lambda: m.logits(ids)),
                           ("complete", lambda: m.complete(ids, max_tokens=48, seed=1,
                                                           ignore_eos=True))]:
            took, gap, n = spun_through(call)
            # Holding the GIL for the call would leave one gap of about `took`.
            assert took > 0.05, f"{name}: {took:.3f} s is too short to tell"
            assert gap < took / 2 and n > 1000, \
                f"{name}: took {took:.3f} s, the Python thread's longest gap {gap:.3f} s, {n} steps"
