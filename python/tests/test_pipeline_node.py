"""Pipeline nodes in Python: channels from Python (inferd._inferd._Channel,
inferd.pipeline's Publisher, Subscriber and Sample) in-process, and
`python -m inferd.runner` driven by a fake manager written here (channels
made with channel_create, a SOCK_SEQPACKET socket pair, the node's end on
its descriptor 3), as docs/pipeline.md specifies."""
import hashlib
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import inferd
from inferd import _inferd, pipeline
from inferd.pipeline import HEADER_BYTES, Publisher, Subscriber

ROOT = pathlib.Path(__file__).resolve().parents[2]


def channel(slot_bytes=1 << 16, slots=4, subs=2, policy="block"):
    return _inferd.channel_create(slot_bytes, slots, subs, policy)


def until(cond, timeout=30):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.005)


def exporter(arr):
    """The object whose buffer @arr views (through NumPy's bases)."""
    while not isinstance(arr, memoryview):
        arr = arr.base
    return arr.obj


@pytest.fixture
def chan():
    """A channel's fd (closed after the test) and a publisher and a
    subscriber on it."""
    fd = channel(slot_bytes=(10 << 20) + HEADER_BYTES, slots=4)
    pub, sub = Publisher(fd), Subscriber(fd)
    yield fd, pub, sub
    pub.close()
    sub.close()
    os.close(fd)


# ---- the header ----

def test_header_matches_the_c_headers():
    tensor_h = (ROOT / "include/inferd/tensor.h").read_text()
    body = re.search(r"typedef enum inferd_elem \{(.*?)\} inferd_elem;", tensor_h, re.S).group(1)
    names = re.findall(r"INFERD_ELEM_(\w+)", body)
    codes = {n: i for i, n in enumerate(names)}  # implicit enum values from 0
    assert "=" not in re.sub(r"/\*.*?\*/", "", body)
    for name in ("BOOL", "U8", "U16", "U32", "U64", "I8", "I16", "I32", "I64", "F16", "BF16",
                 "F32", "F64", "BYTES"):
        assert getattr(pipeline, "ELEM_" + name) == codes[name], name
    pipeline_h = (ROOT / "include/inferd/pipeline.h").read_text()
    magic = re.search(r"INFERD_SAMPLE_MAGIC (0x[0-9a-fA-F]+)u", pipeline_h).group(1)
    assert pipeline.MAGIC == int(magic, 16)
    assert re.search(r"INFERD_SAMPLE_END = 1u", pipeline_h)
    assert re.search(r"INFERD_SAMPLE_TEXT = 2u", pipeline_h)
    assert pipeline.HEADER.size == 64
    for dt, e in [(np.bool_, 0), (np.uint8, 1), (np.uint16, 2), (np.uint32, 3), (np.uint64, 4),
                  (np.int8, 5), (np.int16, 6), (np.int32, 7), (np.int64, 8), (np.float16, 9),
                  (np.float32, 11), (np.float64, 12), (">f4", 11)]:
        assert pipeline.elem_of_dtype(dt) == e
    for bad in (np.complex64, object, "U3", [("a", "i4")]):
        with pytest.raises(TypeError):
            pipeline.elem_of_dtype(bad)


def test_header_pack_parse():
    h = pipeline.pack_header(pipeline.TEXT, 7, pipeline.ELEM_U8, (5,), 5)
    assert len(h) == 64
    assert pipeline.parse_header(h + b"hello") == (pipeline.TEXT, 7, pipeline.ELEM_U8, (5,), 5)
    h = pipeline.pack_header(0, 2**64 - 1, pipeline.ELEM_F32, (2, 3, 4, 5), 480)
    assert pipeline.parse_header(h + bytes(480))[3] == (2, 3, 4, 5)
    assert pipeline.parse_header(pipeline.pack_header(pipeline.END, 3, 1, (), 0))[:2] == \
        (pipeline.END, 3)
    # Field by field, as docs/pipeline.md lays it out.
    raw = pipeline.pack_header(2, 0x0102030405060708, 11, (9, 8), 288)
    assert raw[0:4] == bytes.fromhex("49464453")  # "IFDS", little-endian 0x53444649
    assert int.from_bytes(raw[8:16], "little") == 0x0102030405060708
    assert int.from_bytes(raw[16:20], "little") == 11
    assert int.from_bytes(raw[20:24], "little") == 2
    assert int.from_bytes(raw[24:32], "little") == 9
    assert int.from_bytes(raw[56:64], "little") == 288
    with pytest.raises(ValueError, match="at most 4"):
        pipeline.pack_header(0, 1, 1, (1,) * 5, 1)


@pytest.mark.parametrize("raw, msg", [
    (b"\0" * 10, "shorter than"),
    (b"\0" * 64, "no header"),
    (pipeline.pack_header(0, 1, 11, (4,), 16) + bytes(8), "16 payload bytes, 8 follow"),
    (pipeline.pack_header(0, 1, 11, (3,), 16) + bytes(16), "holds 3 elements"),
    (pipeline.pack_header(0, 1, 13, (3,), 3) + bytes(3), "element type 13"),
    (pipeline.HEADER.pack(pipeline.MAGIC, 0, 1, 1, 5, 1, 1, 1, 1, 1) + bytes(1), "5 dimensions"),
    (pipeline.pack_header(0, 1, 1, (-1,), 0), "dimension 0 is -1"),
    (pipeline.pack_header(pipeline.TEXT, 1, 11, (1,), 4) + bytes(4), "text is U8"),
])
def test_header_malformed(raw, msg):
    with pytest.raises(ValueError, match=msg):
        pipeline.parse_header(raw)


# ---- channels in-process ----

def test_channel_create_and_seats():
    fd = channel(slot_bytes=4096, slots=2, subs=1, policy="drop_oldest")
    try:
        ch = _inferd._Channel(fd, "publisher")
        assert (ch.slot_bytes, ch.slots, ch.max_subscribers, ch.policy, ch.role) == \
            (4096, 2, 1, "drop_oldest", "publisher")
        with pytest.raises(inferd.ConflictError):
            _inferd._Channel(fd, "publisher")
        s = _inferd._Channel(fd, "subscriber")
        with pytest.raises(inferd.ConflictError):
            _inferd._Channel(fd, "subscriber")
        with pytest.raises(ValueError):
            _inferd._Channel(fd, "reader")
        with pytest.raises(ValueError):
            s.loan()
        with pytest.raises(ValueError):
            ch.receive(0)
        ch.close()
        assert ch.closed
        with pytest.raises(ValueError, match="closed"):
            ch.loan()
        _inferd._Channel(fd, "publisher").close()  # the seat is back
        s.close()
    finally:
        os.close(fd)
    with pytest.raises(inferd.InvalidRequestError):
        _inferd.channel_create(0, 1, 1)
    with pytest.raises(ValueError):
        _inferd.channel_create(64, 1, 1, "sometimes")
    r, w = os.pipe()
    try:
        with pytest.raises(inferd.InvalidRequestError, match="not a sealed channel"):
            _inferd._Channel(r, "subscriber")
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("size", [1 << 10, 100_003, 1 << 20, 10 << 20])
def test_sizes_intact(chan, size):
    fd, pub, sub = chan
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    want = hashlib.sha256(data).hexdigest()
    pub.send(data, 1)  # one copy into the slot
    arr = pub.loan(np.uint8, (size,), 2)  # written in place
    arr[:] = data[::-1]
    pub.publish()
    with sub.receive(0) as a, sub.receive(0) as b:
        assert a.session == 1 and a.shape == (size,) and a.array.dtype == np.uint8
        assert hashlib.sha256(a.array).hexdigest() == want
        assert hashlib.sha256(b.array[::-1].copy()).hexdigest() == want
        assert a.nbytes == size


def test_dtypes_and_shapes(chan):
    fd, pub, sub = chan
    values = [np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.array(3.5),
              np.arange(6, dtype=">i4").reshape(3, 2).T,  # big-endian, strided
              np.array([True, False]), np.zeros((0, 3), np.int16),
              np.arange(16, dtype=np.uint64).reshape(1, 2, 2, 4), np.float16([1, 2]),
              b"\x00\x01raw", [1, 2, 3], 7]
    for i, v in enumerate(values):
        pub.send(v, i)
        with sub.receive(0) as s:
            want = np.frombuffer(v, np.uint8) if isinstance(v, bytes) else np.asarray(v)
            assert s.session == i and not s.end and s.text is None
            assert s.array.shape == want.shape
            assert s.array.dtype == want.dtype.newbyteorder("=")
            np.testing.assert_array_equal(s.array, want)
            del want


def test_text_and_end(chan):
    fd, pub, sub = chan
    pub.send("héllo wörld", 5)
    pub.end(5)
    s = sub.receive(0)
    assert s.is_text and s.text == "héllo wörld" and s.value == "héllo wörld"
    assert s.elem == pipeline.ELEM_U8 and s.shape == (len("héllo wörld".encode()),)
    s.release()
    e = sub.receive(0)
    assert e.end and e.session == 5 and e.array is None and e.text is None and e.nbytes == 0
    e.release()


def test_torch_values(chan):
    torch = pytest.importorskip("torch")
    fd, pub, sub = chan
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # not contiguous
    pub.send(t, 1)
    with sub.receive(0) as s:
        np.testing.assert_array_equal(s.array, t.numpy())
    pub.send(torch.tensor([1.5, -2.0], dtype=torch.bfloat16), 2)
    with sub.receive(0) as s:
        assert s.elem == pipeline.ELEM_BF16 and s.array.dtype == np.int16
        back = torch.from_numpy(s.array.copy()).view(torch.bfloat16)
        assert back.tolist() == [1.5, -2.0]
    pub.send(torch.tensor([True, False]), 3)
    with sub.receive(0) as s:
        assert s.array.tolist() == [True, False]


def test_zero_copy_same_bytes(chan):
    """The subscriber's array is a read-only view of the channel's memory:
    the very bytes the publisher's loaned array wrote (a write through the
    stale loan after publishing shows through; never do that outside a
    test)."""
    fd, pub, sub = chan
    a = pub.loan(np.float32, (1000,), 9)
    a[:] = np.arange(1000)
    pub.publish()
    s = sub.receive(0)
    x = s.array
    assert not x.flags.writeable and not x.flags.owndata
    assert exporter(x) is s._raw  # a view of the sample itself, not a copy
    assert s._raw.exports == 1
    assert x.__array_interface__["data"][0] == s._raw.address + HEADER_BYTES
    assert x.__array_interface__["data"][0] % 64 == 0
    assert x[5] == 5
    a[5] = 42.0  # the same bytes, mapped twice
    assert x[5] == 42.0
    with pytest.raises(ValueError):
        x[0] = 1
    with pytest.raises(ValueError):
        x.flags.writeable = True
    with pytest.raises((TypeError, BufferError)):
        io.BytesIO(b"x").readinto(s._raw)  # a writable buffer is refused
    with memoryview(s._raw) as mv:
        assert mv.readonly and mv.nbytes == HEADER_BYTES + 4000
    del x, a
    s.release()


def test_subscriber_mapping_is_read_only(tmp_path):
    """A write into a received sample faults (the mapping is PROT_READ)."""
    code = textwrap.dedent("""
        import ctypes, numpy as np
        from inferd import _inferd
        from inferd.pipeline import Publisher, Subscriber
        fd = _inferd.channel_create(4096, 2, 1)
        p, s = Publisher(fd), Subscriber(fd)
        p.send(np.arange(4), 1)
        x = s.receive(0)
        print("received", flush=True)
        ctypes.memset(x._raw.address, 0, 1)
        print("written", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "received" in r.stdout and "written" not in r.stdout
    assert r.returncode != 0


def test_release_semantics():
    fd = channel(slot_bytes=4096, slots=2, subs=1)
    try:
        pub, sub = Publisher(fd), Subscriber(fd)
        pub.send(np.arange(4), 1)
        pub.send(np.arange(4), 2)
        s1, s2 = sub.receive(0), sub.receive(0)
        # Both slots are held: the publisher waits (and times out).
        with pytest.raises(inferd.DeadlineExceededError, match="no free slot"):
            pub.send(np.arange(4), 3, timeout=0.05)
        view = s1.array
        with pytest.raises(BufferError, match="view"):
            s1.release()
        assert not s1.released
        del view
        s1.release()
        assert s1.released
        s1.release()  # again: nothing
        with pytest.raises(ValueError, match="released"):
            s1.array
        with pytest.raises(BufferError):
            memoryview(s1._raw)
        pub.send(np.arange(4), 3, timeout=0)  # s1's slot came back
        # Dropping a sample releases it too (once its views are gone).
        arr = s2.array
        del s2
        with pytest.raises(inferd.DeadlineExceededError):
            pub.send(np.arange(4), 4, timeout=0.02)
        del arr
        pub.send(np.arange(4), 4, timeout=0)
        assert sub.stats()["received"] == 2 and pub.stats()["published"] == 4
        # A subscriber closed while it holds a sample: the memory stays
        # mapped until the sample goes.
        s3 = sub.receive(0)
        a3 = s3.array
        sub.close()
        assert sub._ch.closed and sub._ch.outstanding == 1
        assert a3.tolist() == [0, 1, 2, 3]
        with pytest.raises(ValueError, match="closed"):
            sub.receive(0)
        del a3
        s3.release()
        assert sub._ch.outstanding == 0
        pub.close()
    finally:
        os.close(fd)


def test_loans():
    fd = channel(slot_bytes=1024, slots=2, subs=1)
    try:
        pub, sub = Publisher(fd), Subscriber(fd)
        a = pub.loan(np.int32, (4,), 1)
        assert a.flags.writeable and pub.loaned is a
        with pytest.raises(RuntimeError, match="loan is out"):
            pub.loan(np.int32, (4,), 1)
        with pytest.raises(RuntimeError, match="loan is out"):
            pub.send(np.arange(3), 1)
        a[:] = [1, 2, 3, 4]
        pub.send(a, 1)  # the loaned array itself: published, no copy
        assert pub.loaned is None
        with sub.receive(0) as s:
            assert s.array.tolist() == [1, 2, 3, 4]
        with pytest.raises(ValueError, match="does not fit"):
            pub.loan(np.uint8, (1024,), 1)
        with pytest.raises(ValueError, match="does not fit"):
            pub.send(np.zeros(1024, np.uint8), 1)
        with pytest.raises(ValueError, match="none negative"):
            pub.loan(np.uint8, (2, -1), 1)
        with pytest.raises(ValueError, match="session -1"):
            pub.send("x", -1)
        assert pub.loaned is None
        # The raw channel: a loan out is loaned again, the same slot.
        ch = pub._ch
        m1 = ch.loan(0)
        m2 = ch.loan(0)
        assert len(m1) == 1024 and not m1.readonly
        m1[:3] = b"abc"
        assert bytes(m2[:3]) == b"abc"
        ch.publish(0)
        with pytest.raises(BufferError, match="published"):
            memoryview(m1.obj)  # no new view of a published loan
        with pytest.raises(ValueError, match="no loan"):
            ch.publish(0)
        with pytest.raises(ValueError, match="shorter than its 64-byte header"):
            sub.receive(0)  # 0 bytes: no header (given back at once)
        assert sub._ch.outstanding == 0
        pub.close()
        sub.close()
    finally:
        os.close(fd)


def test_timeouts_and_shutdown():
    fd = channel(slot_bytes=1024, slots=1, subs=1)
    try:
        pub, sub = Publisher(fd), Subscriber(fd)
        t0 = time.monotonic()
        with pytest.raises(inferd.DeadlineExceededError) as ei:
            sub.receive(timeout=0.1)
        assert time.monotonic() - t0 >= 0.09
        assert ei.value.code == "timeout" and ei.value.status == 504
        pub.send("one", 1)
        held = sub.receive(0)
        with pytest.raises(inferd.DeadlineExceededError):
            pub.send("two", 1, timeout=0.05)
        held.release()
        pub.send("two", 1)
        obs = _inferd._Channel(fd, "observer")
        obs.shutdown()
        with sub.receive(0) as s:  # what was published is still taken
            assert s.text == "two"
        with pytest.raises(inferd.UnavailableError, match="shut down"):
            sub.receive()
        with pytest.raises(inferd.UnavailableError, match="shut down"):
            pub.send("three", 1)
        assert list(sub) == []  # iteration ends at the shutdown
        obs.close()
    finally:
        os.close(fd)


def test_waits_release_the_gil():
    fd = channel(slot_bytes=1024, slots=2, subs=1)
    try:
        pub, sub = Publisher(fd), Subscriber(fd)
        got = []
        t = threading.Thread(target=lambda: got.append(sub.receive(timeout=10).text))
        t.start()
        until(lambda: sub._ch.waiting)  # the thread waits in the channel; this one runs
        with pytest.raises(RuntimeError, match="another thread"):
            sub.receive(0)
        assert sub.stats()["received"] == 0  # stats during the wait
        pub.send("hi", 1)
        t.join(10)
        assert got == ["hi"]
        # A close asked during a wait takes effect once the wait ends.
        errs = []

        def wait():
            try:
                sub.receive(timeout=10)
            except Exception as e:  # noqa: B902
                errs.append(e)
        t = threading.Thread(target=wait)
        t.start()
        until(lambda: sub._ch.waiting)
        sub.close()
        assert sub._ch.closed
        _inferd._Channel(fd, "observer").shutdown()
        t.join(10)
        assert len(errs) == 1
        pub.close()
    finally:
        os.close(fd)


# ---- node classes (no runner) ----

def test_node_decorator():
    @inferd.node
    def upper(inputs):
        return inputs["in"].upper()

    assert issubclass(upper, inferd.Node) and upper.__name__ == "upper"
    n = upper(suffix="!")
    assert n.options == {"suffix": "!"}
    assert n.process({"in": "ab"}) == "AB"

    def setup(self, progress):
        progress(0.5, "half")
        self.k = self.options["k"]

    @inferd.node(init=setup, end=lambda self: {"out": "bye"})
    def scale(self, inputs):
        return {"out": inputs["x"] * self.k}

    n = scale(k=3)
    seen = []
    n.init(lambda f, m="": seen.append((f, m)))
    assert seen == [(0.5, "half")]
    assert n.process({"x": 2}) == {"out": 6}
    assert n.end() == {"out": "bye"}


# ---- the runner, with a fake manager ----

NODES = '''
import time
import numpy as np
import inferd


class Upper(inferd.Node):
    def init(self, progress):
        progress(0.25, "warming up")
        progress(0.75, "almost")
        self.suffix = self.options.get("suffix", "")

    def process(self, inputs):
        return {"out": inputs["in"].upper() + self.suffix}


@inferd.node
def shout(inputs):
    return inputs["in"].upper()


class Double(inferd.Node):
    def process(self, inputs):
        x = inputs["in"]
        assert isinstance(x, np.ndarray) and not x.flags.writeable and not x.flags.owndata
        if self.options.get("loan"):
            y = self.loan("out", x.dtype, x.shape)  # zero copy out too
            np.multiply(x, 2, out=y)
            return {"out": y}
        return {"out": x * 2}


class Inspect(inferd.Node):
    def process(self, inputs):
        x = inputs["in"]
        while not isinstance(x, memoryview):
            x = x.base
        return {"out": f"{type(x.obj).__name__} {x.readonly}"}


class Counter(inferd.Node):
    def __init__(self, **options):
        super().__init__(**options)
        self.counts = {}

    def process(self, inputs):
        self.counts[self.session] = self.counts.get(self.session, 0) + 1
        return [{"out": inputs["in"] + "#" + str(self.session)}, {"out": inputs["in"] + "!"}]

    def end(self):
        return {"out": "count %d" % self.counts.pop(self.session)}


class Join(inferd.Node):
    def process(self, inputs):
        return {"out": "%s+%s" % (inputs["a"], inputs["b"])}


class FailInit(inferd.Node):
    def init(self, progress):
        progress(0.1, "about to fail")
        raise RuntimeError("no weights here")


class FailProcess(inferd.Node):
    def process(self, inputs):
        return 1 / 0


class Keeper(inferd.Node):
    def process(self, inputs):
        self.kept = inputs["in"]
        return None


class Slow(inferd.Node):
    def process(self, inputs):
        print("busy", flush=True)
        time.sleep(60)


class Strict:
    def __init__(self, k):
        self.k = k

    def process(self, inputs):
        return inputs["in"] * self.k


class BadOutput(inferd.Node):
    def process(self, inputs):
        return {"elsewhere": "x"}
'''


class FakeManager:
    """The manager's side of one node: channels, a control socket pair, the
    process (`python -m inferd.runner` with the socket on descriptor 3)."""

    def __init__(self, tmp_path, cls, inputs=("in",), outputs=("out",), options=None,
                 slot_bytes=1 << 16, slots=4, extra=None):
        (tmp_path / "mynodes.py").write_text(NODES)
        self.ch = {n: channel(slot_bytes, slots, 2) for n in list(inputs) + list(outputs)}
        # The test's seats: it publishes the node's inputs, reads its outputs.
        self.pub = {n: Publisher(self.ch[n]) for n in inputs}
        self.sub = {n: Subscriber(self.ch[n]) for n in outputs}
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
        env["INFERD_NODE_FD"] = "3"
        self.err_path = tmp_path / "node.err"
        self.err = open(self.err_path, "w")
        self.out_path = tmp_path / "node.out"
        self.out = open(self.out_path, "w")
        # The child's end becomes its descriptor 3, as the manager does.
        boot = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                "os.execv(sys.executable, [sys.executable, '-m', 'inferd.runner'])")
        self.proc = subprocess.Popen([sys.executable, "-c", boot, str(child.fileno())],
                                     pass_fds=(child.fileno(),), env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err)
        child.close()
        cfg = {"type": "config", "pipeline": "test", "node": "n1", "kind": "python",
               "module": "mynodes", "class": cls, "options": options or {},
               "inputs": list(inputs), "outputs": list(outputs)}
        cfg.update(extra or {})
        fds = [self.ch[n] for n in list(inputs) + list(outputs)]
        socket.send_fds(self.sock, [json.dumps(cfg).encode()], fds)

    def recv(self, timeout=30):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        return json.loads(data) if data else None

    def until_ready(self):
        seen = []
        while True:
            m = self.recv()
            assert m is not None, self.stderr()
            if m["type"] == "ready":
                return seen
            assert m["type"] == "progress", m
            seen.append((m["fraction"], m["message"]))

    def send(self, msg):
        self.sock.send(json.dumps(msg).encode())

    def start(self):
        self.until_ready()
        self.send({"type": "run"})

    def output(self, name="out", timeout=30):
        """The next output sample: (session, "END" | text | a copy of the array)."""
        with self.sub[name].receive(timeout) as s:
            v = "END" if s.end else s.text if s.is_text else s.array.copy()
            return s.session, v

    def wait(self, timeout=30):
        return self.proc.wait(timeout)

    def stderr(self):
        self.err.flush()
        return self.err_path.read_text()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self.err.close()
        self.out.close()
        for p in self.pub.values():
            p.close()
        for s in self.sub.values():
            s.close()
        for fd in self.ch.values():
            os.close(fd)


@pytest.fixture
def manager(tmp_path):
    made = []

    def make(*args, **kw):
        m = FakeManager(tmp_path, *args, **kw)
        made.append(m)
        return m
    yield make
    for m in made:
        m.close()


def test_runner_progress_ready_and_text(manager):
    m = manager("Upper", options={"suffix": "!"})
    assert m.until_ready() == [(0.25, "warming up"), (0.75, "almost")]
    m.send({"type": "run"})
    m.pub["in"].send("hello", 1)
    m.pub["in"].send("wörld", 2)
    assert m.output() == (1, "HELLO!")
    assert m.output() == (2, "WÖRLD!")
    m.send({"type": "stop"})
    assert m.wait() == 0
    assert "error" not in m.stderr().lower()


def test_runner_decorated_function(manager):
    m = manager("shout")
    m.start()
    m.pub["in"].send("quiet", 4)
    m.pub["in"].end(4)
    assert m.output() == (4, "QUIET")
    assert m.output() == (4, "END")
    m.send({"type": "stop"})
    assert m.wait() == 0


@pytest.mark.parametrize("loan", [False, True])
def test_runner_doubles_float32(manager, loan):
    m = manager("Double", options={"loan": loan}, slot_bytes=(4 << 20) + 64)
    m.start()
    x = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)
    a = m.pub["in"].loan(np.float32, x.shape, 3)  # written in place, no copy
    a[:] = x
    m.pub["in"].publish()
    del a
    with m.sub["out"].receive(30) as s:
        y = s.array
        assert s.session == 3 and y.dtype == np.float32 and y.shape == x.shape
        assert not y.flags.writeable and exporter(y) is s._raw  # the channel's memory
        np.testing.assert_array_equal(y, x * 2)
        del y
    m.send({"type": "stop"})
    assert m.wait() == 0, m.stderr()


def test_runner_inputs_are_views(manager):
    m = manager("Inspect")
    m.start()
    m.pub["in"].send(np.arange(10), 1)
    assert m.output() == (1, "_Sample True")
    m.send({"type": "stop"})
    assert m.wait() == 0


def test_runner_sessions_interleaved(manager):
    m = manager("Counter", slots=16)  # every output fits while this test sends
    m.start()
    p = m.pub["in"]
    p.send("a", 1)
    p.send("b", 2)
    p.send("c", 1)
    p.end(2)
    p.send("d", 3)
    p.end(1)
    p.end(3)
    got = [m.output() for _ in range(14)]
    assert got == [(1, "a#1"), (1, "a!"), (2, "b#2"), (2, "b!"), (1, "c#1"), (1, "c!"),
                   (2, "count 1"), (2, "END"), (3, "d#3"), (3, "d!"), (1, "count 2"),
                   (1, "END"), (3, "count 1"), (3, "END")]
    m.send({"type": "stop"})
    assert m.wait() == 0


def test_runner_joins_two_inputs(manager):
    m = manager("Join", inputs=("a", "b"), slots=16)
    m.start()
    a, b = m.pub["a"], m.pub["b"]
    a.send("x1", 1)
    a.send("y1", 2)
    b.send("y2", 2)
    a.send("z1", 3)
    b.send("x2", 1)
    a.end(2)
    b.end(2)
    a.send("x3", 1)  # one more on a for session 1: no partner on b
    b.end(1)
    a.end(1)
    b.send(np.int64(5), 3)  # arrays join with text
    a.end(3)
    b.end(3)
    per = {}
    for _ in range(6):
        s, v = m.output()
        per.setdefault(s, []).append(v)
    assert per == {1: ["x1+x2", "END"], 2: ["y1+y2", "END"], 3: ["z1+5", "END"]}
    m.send({"type": "stop"})
    assert m.wait() == 0
    assert "no partner" in m.stderr()


def test_runner_init_error(manager):
    m = manager("FailInit")
    assert m.recv() == {"type": "progress", "fraction": 0.1, "message": "about to fail"}
    assert m.recv() == {"type": "error", "message": "RuntimeError: no weights here"}
    assert m.wait() == 1
    err = m.stderr()
    assert "Traceback" in err and "no weights here" in err


def test_runner_import_errors(manager):
    m = manager("NoSuchClass")
    msg = m.recv()
    assert msg["type"] == "error" and "has no class 'NoSuchClass'" in msg["message"]
    assert m.wait() == 1
    m = manager("Upper", extra={"module": "no_such_module"})
    msg = m.recv()
    assert msg == {"type": "error", "message": "ModuleNotFoundError: No module named "
                   "'no_such_module'"}
    assert m.wait() == 1


def test_runner_options(manager):
    m = manager("Strict", options={"k": 2})  # a class of its own, not a Node
    m.start()
    m.pub["in"].send(np.float32([1, 2]), 1)
    s, v = m.output()
    assert s == 1 and v.tolist() == [2, 4]
    m.send({"type": "stop"})
    assert m.wait() == 0
    m = manager("Strict", options={"j": 2})
    msg = m.recv()
    assert msg["type"] == "error" and msg["message"].startswith("TypeError: ") and \
        "'j'" in msg["message"]
    assert m.wait() == 1


def test_runner_process_errors(manager):
    m = manager("FailProcess")
    m.start()
    m.pub["in"].send("x", 1)
    assert m.recv() == {"type": "error", "message": "ZeroDivisionError: division by zero"}
    assert m.wait() == 1
    assert "Traceback" in m.stderr()
    m = manager("Keeper")
    m.start()
    m.pub["in"].send(np.arange(3), 1)
    msg = m.recv()
    assert msg["type"] == "error" and "kept a view of input 'in'" in msg["message"]
    assert m.wait() == 1
    m = manager("BadOutput")
    m.start()
    m.pub["in"].send("x", 1)
    msg = m.recv()
    assert msg["type"] == "error" and "output 'elsewhere'" in msg["message"]
    assert m.wait() == 1


def test_runner_malformed_sample(manager):
    m = manager("Upper")
    m.start()
    ch = m.pub["in"]._ch  # the raw channel: a sample without a header
    mv = ch.loan(0)
    mv[:64] = bytes(64)
    ch.publish(100)
    del mv
    msg = m.recv()
    assert msg["type"] == "error"
    assert msg["message"].startswith("ValueError: input 'in': sample: no header"), msg
    assert m.wait() == 1


def test_runner_stop(manager):
    m = manager("Upper")
    m.until_ready()
    m.send({"type": "stop"})  # before run
    assert m.wait() == 0
    assert m.recv(5) is None  # no error, the socket closed
    m = manager("Slow")
    m.start()
    m.pub["in"].send("x", 1)
    until(lambda: "busy" in m.stderr())  # its print goes to stderr, not stdout
    assert m.out_path.read_text() == ""
    m.send({"type": "stop"})
    t0 = time.monotonic()
    assert m.wait() == 0  # busy: after a short grace
    assert time.monotonic() - t0 < 10
    m = manager("Upper")
    m.start()
    m.sock.close()  # the manager went: as a stop
    assert m.wait() == 0


def test_runner_channel_shutdown(manager):
    m = manager("Upper")
    m.start()
    m.pub["in"].send("last", 1)
    assert m.output() == (1, "LAST")
    m.pub["in"].shutdown()  # as the manager does when the pipeline stops or fails
    assert m.wait() == 0
    assert m.recv(5) is None
    assert "Traceback" not in m.stderr()
    # Shut down under a loan on its output: exits 0 as well.
    m = manager("Upper", slots=1)
    m.start()
    m.pub["in"].send("a", 1)
    held = m.sub["out"].receive(30)  # the output's only slot, held here
    m.pub["in"].send("b", 1)
    time.sleep(0.2)  # the node waits for a slot to publish "B"
    m.sub["out"].shutdown()
    assert m.wait() == 0
    assert m.recv(5) is None
    held.release()
