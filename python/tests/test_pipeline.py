"""Pipelines from Python against real node processes: Python nodes in
their own processes run in parallel (separate GILs); start-up progress and
the initialization timeout; a Python node's error and a kill -9 fail the
pipeline naming the node; an llm node gives `inferd generate`'s text; the
builder's errors."""
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time

import numpy as np
import pytest

import inferd

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("INFERD_FIXTURES", os.path.join(HERE, "..", "..", "tests", "fixtures"))
MODEL = os.path.join(FIXTURES, "models", "stories260K.gguf")
INFERD = os.environ.get("INFERD")
pytestmark = pytest.mark.skipif(not INFERD, reason="needs the inferd command (INFERD)")

NODES = textwrap.dedent('''
    import os, time
    import numpy as np
    import inferd

    class Burn(inferd.Node):
        """Burns CPU_S of CPU per input, reports when (this process's clock)."""
        def process(self, inputs):
            t0 = time.time()
            end = time.process_time() + self.options["cpu_s"]
            x = 0
            while time.process_time() < end:
                x += 1
            return np.array([t0, time.time(), os.getpid()], dtype=np.float64)

    class Slow(inferd.Node):
        def init(self, progress):
            progress(0.5, "half way")
            time.sleep(self.options["sleep_s"])

        def process(self, inputs):
            return inputs["x"].upper()

    class Picky(inferd.Node):
        def process(self, inputs):
            if inputs["x"] == "boom":
                raise ValueError("cannot take boom")
            return inputs["x"]

    @inferd.node
    def double(inputs):
        (ids,) = inputs.values()
        return ids * 2
''')


@pytest.fixture
def nodes_dir(tmp_path, monkeypatch):
    (tmp_path / "pl_nodes.py").write_text(NODES)
    monkeypatch.setenv("INFERD_EXE", INFERD)
    return tmp_path


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_python_nodes_run_in_parallel(nodes_dir):
    p = inferd.Pipeline("burn")
    p.channel("x").channel("a").channel("b")
    p.python_node("left", "pl_nodes:Burn", inputs=["x"], outputs=["a"], cpu_s=0.5)
    p.python_node("right", "pl_nodes:Burn", inputs=["x"], outputs=["b"], cpu_s=0.5)
    p.inputs("x").outputs("a", "b").python_path(nodes_dir)
    with p.start() as run:
        run.wait_for_initialization(timeout=60)
        with run.session() as s:
            s.send("x", np.zeros(1, np.float32))
            s.end()
            (a,) = [o.array.copy() for o in s.results("a")]
            (b,) = [o.array.copy() for o in s.results("b")]
    # Two processes, each burning 0.5 s of its own CPU, at once: the step
    # takes about one burn, not two (one GIL would run them one after the
    # other). CTest gives this test two CPUs (PROCESSORS 2).
    assert a[2] != b[2] and a[2] != os.getpid()
    step = max(a[1], b[1]) - min(a[0], b[0])
    serial = (a[1] - a[0]) + (b[1] - b[0])
    assert step < 0.75 * serial, f"the step took {step:.3f} s, the burns {serial:.3f} s in all"


def test_progress_and_the_initialization_timeout(nodes_dir):
    seen = []
    p = inferd.Pipeline("slow")
    p.channel("x").channel("y")
    p.python_node("slow", "pl_nodes:Slow", inputs=["x"], outputs=["y"], sleep_s=2.0)
    p.inputs("x").outputs("y").python_path(nodes_dir)
    with p.start(progress=lambda nodes: seen.append([dict(n) for n in nodes])) as run:
        with pytest.raises(inferd.DeadlineExceededError) as e:
            run.wait_for_initialization(timeout=0.5)
        assert "not ready after 500 ms; still loading: slow (initializing, 50%: half way)" \
            in str(e.value)
        run.wait_for_initialization(timeout=60)
        with run.session() as s:
            s.send("x", "hello")
            s.end()
            assert [o.text for o in s.results("y")] == ["HELLO"]
    states = [n[0]["state"] for n in seen]
    assert "initializing" in states and "running" in states
    assert any(n[0]["message"] == "half way" and n[0]["progress"] == 0.5 for n in seen)


def test_a_node_error_and_a_kill_fail_the_pipeline(nodes_dir):
    p = inferd.Pipeline("picky")
    p.channel("x").channel("y")
    p.python_node("picky", "pl_nodes:Picky", inputs=["x"], outputs=["y"])
    p.inputs("x").outputs("y").python_path(nodes_dir)
    with pytest.raises(inferd.UnavailableError) as e:
        with p.start() as run:
            run.wait_for_initialization(timeout=60)
            with run.session() as s:
                s.send("x", "fine")
                assert run.receive("y", timeout=30).text == "fine"
                s.send("x", "boom")
                run.receive("y", timeout=30)
    assert "node 'picky' (python) failed: ValueError: cannot take boom" in str(e.value)

    with p.start() as run:
        run.wait_for_initialization(timeout=60)
        pid = run.nodes()[0]["pid"]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(inferd.UnavailableError) as e:
            run.receive("y", timeout=30)
        assert "node 'picky' (python) was killed by signal 9 (KILL)" in str(e.value)
        assert isinstance(run.failure(), inferd.UnavailableError)
        assert run.nodes()[0]["state"] == "failed"
        with pytest.raises(inferd.UnavailableError):
            run.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_llm_node_gives_inferd_generate_text(nodes_dir):
    want = json.loads(subprocess.run(
        [INFERD, "generate", "-m", MODEL, "-p", "Once upon a time", "-n", "24", "--seed", "42",
         "--json", "-t", "1"], check=True, capture_output=True, text=True).stdout)["text"]
    p = inferd.Pipeline("story")
    p.channel("prompt").channel("ids").channel("pieces", slots=16).channel("doubled")
    p.node("tok", "tokenize", inputs=["prompt"], outputs=["ids"], model=MODEL)
    p.channel("ids_llm").channel("ids_py")
    p.node("fan", "identity", inputs=["ids"], outputs=["ids_llm", "ids_py"])
    p.node("llm", "llm", inputs=["ids_llm"], outputs=["pieces"], model=MODEL, max_tokens=24,
           seed=42, threads=1)
    p.python_node("double", "pl_nodes:double", inputs=["ids_py"], outputs=["doubled"])
    p.inputs("prompt").outputs("pieces", "doubled").python_path(nodes_dir)
    with p.start() as run:
        run.wait_for_initialization(timeout=60)
        with run.session() as s:
            s.send("prompt", "Once upon a time")
            s.end()
            assert "".join(o.text for o in s.results("pieces")) == want
            (d,) = [o.array.copy() for o in s.results("doubled")]
    assert d.dtype == np.int32 and list(d) == [2 * i for i in [1, 403, 407, 261, 378]]


def test_builder_errors(nodes_dir):
    p = inferd.Pipeline("bad")
    p.channel("x").channel("y")
    p.node("a", "whisper", inputs=["x"], outputs=["y"])
    p.inputs("x").outputs("y")
    with pytest.raises(inferd.InvalidRequestError) as e:
        p.start()
    assert "nodes[0].kind: unknown kind 'whisper'" in str(e.value)
    assert e.value.param == "nodes[0].kind"
    with pytest.raises(ValueError, match="__main__"):
        class Local(inferd.Node):
            pass
        Local.__module__ = "__main__"
        inferd.Pipeline().python_node("n", Local)


def _resident(path):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


@pytest.mark.skipif(not shutil.which("fincore"), reason="needs fincore (util-linux)")
def test_models_are_read_ahead_while_nodes_start(nodes_dir, tmp_path):
    model = tmp_path / "copy.gguf"
    shutil.copy(MODEL, model)
    fd = os.open(model, os.O_RDONLY)
    os.fsync(fd)  # clean pages, which the kernel may drop
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    if _resident(model) != 0:
        pytest.skip("the kernel keeps the file in memory (cannot show a read ahead)")
    p = inferd.Pipeline("pre")
    p.channel("x").channel("y")
    # The node sleeps in its init and never opens the file: only the
    # manager's read ahead can bring it in.
    p.python_node("slow", "pl_nodes:Slow", inputs=["x"], outputs=["y"], sleep_s=3.0)
    p.inputs("x").outputs("y").python_path(nodes_dir).preload(model)
    with p.start() as run:
        size = os.path.getsize(model)
        for _ in range(100):
            if _resident(model) >= size:  # whole pages
                break
            time.sleep(0.02)
        assert _resident(model) >= size
        assert run.nodes()[0]["state"] in ("starting", "initializing")
        run.wait_for_initialization(timeout=60)
