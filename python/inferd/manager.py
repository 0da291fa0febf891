"""Pipelines from Python: build a manifest (Pipeline), start its nodes,
each in its own process (C built-in nodes and Python nodes), wait for them
(with progress and a timeout), and feed it sessions (docs/pipeline.md).

    p = inferd.Pipeline("story")
    p.channel("prompt", slot_bytes=65536).channel("pieces", slots=16)
    p.node("llm", "llm", inputs=["prompt"], outputs=["pieces"],
           model="models/stories260K.gguf", max_tokens=32, seed=42)
    p.inputs("prompt").outputs("pieces")
    with p.start(progress=print) as run:
        run.wait_for_initialization(timeout=60)
        with run.session() as s:
            s.send("prompt", "Once upon a time")
            s.end()
            text = "".join(x.text for x in s.results("pieces"))
"""
import itertools
import json
import os
import sys
import threading

from ._inferd import _Pipeline
from .pipeline import END, TEXT, _payload, dtype_of_elem

__all__ = ["Pipeline", "RunningPipeline", "Session", "Output"]

_FOREVER = -1


def _ms(timeout):
    return _FOREVER if timeout is None else max(0, int(timeout * 1000))


class Pipeline:
    """A manifest under construction; ``manifest()`` gives it as a dict,
    ``start()`` runs it."""

    def __init__(self, name="pipeline"):
        self.name = name
        self._channels = {}
        self._nodes = []
        self._inputs = []
        self._outputs = []
        self._python_path = []
        self._preload = []

    def channel(self, name, slot_bytes=None, slots=None, policy=None):
        """Declare channel @name: slot_bytes (the largest sample, its 64-byte
        header included), slots (samples in flight), policy ("block" or
        "drop_oldest")."""
        c = {}
        if slot_bytes is not None:
            c["slot_bytes"] = slot_bytes
        if slots is not None:
            c["slots"] = slots
        if policy is not None:
            c["policy"] = policy
        self._channels[name] = c
        return self

    def node(self, name, kind, inputs=(), outputs=(), **options):
        """A built-in node: kind "identity", "tokenize", "detokenize" or
        "llm", with its options as keywords."""
        self._nodes.append({"name": name, "kind": kind, "inputs": list(inputs),
                            "outputs": list(outputs), "options": options})
        return self

    def python_node(self, name, node, inputs=(), outputs=(), **options):
        """A Python node: @node is a Node subclass (or a @inferd.node
        function) importable by its module name, or "module:Class". Its
        options are given to its constructor as keywords."""
        if isinstance(node, str):
            module, _, cls = node.partition(":")
        else:
            module, cls = node.__module__, node.__qualname__
            if module == "__main__":
                raise ValueError(f"node {name}: {cls} is defined in __main__, which its "
                                 "process cannot import: put it in a module")
            mod = sys.modules.get(module)
            path = getattr(mod, "__file__", None)
            if path:
                d = os.path.dirname(os.path.abspath(path))
                # The package root of a dotted module name.
                for _ in range(module.count(".")):
                    d = os.path.dirname(d)
                if d not in self._python_path:
                    self._python_path.append(d)
        self._nodes.append({"name": name, "kind": "python", "module": module, "class": cls,
                            "inputs": list(inputs), "outputs": list(outputs),
                            "options": options})
        return self

    def inputs(self, *names):
        """The channels the caller sends into."""
        self._inputs.extend(names)
        return self

    def outputs(self, *names):
        """The channels the caller receives from."""
        self._outputs.extend(names)
        return self

    def preload(self, *files):
        """Files the manager reads ahead while the nodes start (the built-in
        nodes' models are read ahead anyway)."""
        self._preload.extend(os.path.abspath(f) for f in files)
        return self

    def python_path(self, *dirs):
        """Directories put on the Python nodes' PYTHONPATH."""
        self._python_path.extend(os.path.abspath(d) for d in dirs)
        return self

    def manifest(self):
        m = {"name": self.name, "channels": self._channels, "inputs": self._inputs,
             "outputs": self._outputs, "nodes": self._nodes}
        if self._python_path:
            m["python_path"] = self._python_path
        if self._preload:
            m["preload"] = self._preload
        return m

    def start(self, progress=None, base_dir=None, python=None):
        """Start every node; returns a RunningPipeline. @progress(nodes)
        is called (on the manager's thread) on every change and at least
        every 2 s until all are ready, with a list of {name, kind, state,
        progress, message, pid}. @python: the nodes' interpreter (default
        this one)."""
        return RunningPipeline(json.dumps(self.manifest()), base_dir, progress,
                               python or sys.executable)

    @staticmethod
    def from_manifest(path, progress=None, python=None):
        """Start the manifest file at @path (relative paths in it are from
        its directory)."""
        with open(path) as f:
            text = f.read()
        return RunningPipeline(text, os.path.dirname(os.path.abspath(path)), progress,
                               python or sys.executable)


class Output:
    """A sample from a pipeline output: ``session``, ``end``, ``text``
    (str for text samples), ``array`` (a read-only NumPy view of the
    channel's memory), ``value`` (text or array). ``release()`` (or
    garbage collection) gives the memory back; copy what you keep."""

    __slots__ = ("_raw", "flags", "session", "elem", "shape", "_array", "_text")

    def __init__(self, raw):
        self._raw = raw
        self.flags, self.session, self.elem, self.shape = raw.header
        self._array = None
        self._text = None

    @property
    def end(self):
        return bool(self.flags & END)

    @property
    def text(self):
        if not self.flags & TEXT:
            return None
        if self._text is None:
            self._text = str(memoryview(self._raw), "utf-8")
        return self._text

    @property
    def array(self):
        if self.end or self._raw is None:
            return None
        if self._array is None:
            import numpy as np
            self._array = np.ndarray(self.shape, dtype_of_elem(self.elem),
                                     buffer=memoryview(self._raw))
        return self._array

    @property
    def value(self):
        return self.text if self.flags & TEXT else self.array

    def release(self):
        self._array = None
        self._raw = None

    def __repr__(self):
        return f"<Output session={self.session} flags={self.flags} shape={self.shape}>"


class RunningPipeline:
    """A started pipeline: wait_for_initialization, nodes, session(),
    send/end/receive, stop/close (also as a context manager). Every call
    raises the pipeline's failure (inferd.UnavailableError naming the
    node) once it failed."""

    def __init__(self, manifest, base_dir, progress, python):
        self._p = _Pipeline(manifest, base_dir, python, os.environ.get("INFERD_EXE"),
                            progress)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending = {}  # (channel, session) -> [Output] received for another session
        self._stopped = False

    def wait_for_initialization(self, timeout=None):
        """Return once every node is ready (they then run); raise
        inferd.DeadlineExceededError naming the nodes still loading after
        @timeout seconds, or the pipeline's failure."""
        self._p.wait_ready(_ms(timeout))

    def nodes(self):
        return self._p.nodes()

    def failure(self):
        """The failure (an InferdError) if the pipeline failed, else None."""
        return self._p.failure()

    def session(self):
        """A new session (a stream of inputs with its own id)."""
        return Session(self, next(self._ids))

    def send(self, channel, session, value, timeout=None):
        """Send @value (str: text; bytes; a NumPy array or PyTorch tensor)
        into input @channel for @session (copied once into the channel)."""
        flags, elem, payload = _payload(value)
        shape = (len(payload),) if isinstance(payload, bytes) else payload.shape
        data = payload if isinstance(payload, bytes) else memoryview(
            payload if payload.flags.c_contiguous else payload.copy())
        self._p.send(channel, session, flags, elem, shape, data, _ms(timeout))

    def end(self, session, timeout=None):
        self._p.end(session, _ms(timeout))

    def receive(self, channel, timeout=None):
        """The next sample of output @channel, any session's."""
        return Output(self._p.receive(channel, _ms(timeout)))

    def _receive_for(self, channel, session, timeout):
        with self._lock:
            q = self._pending.get((channel, session))
            if q:
                return q.pop(0)
        while True:
            out = self.receive(channel, timeout)
            if out.session == session:
                return out
            with self._lock:
                self._pending.setdefault((channel, out.session), []).append(out)

    def stop(self, grace=2.0):
        """Ask every node to stop (killed after @grace seconds); raises the
        failure if the pipeline had failed."""
        self._stopped = True
        self._p.stop(_ms(grace))

    def close(self):
        with self._lock:
            self._pending.clear()
        self._p.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Stop (raising the pipeline's failure unless the block raised, or
        stop() was called already) and close."""
        try:
            if not self._stopped:
                self.stop()
        except Exception:  # noqa: BLE001 - the block's own exception goes on
            if exc[0] is None:
                raise
        finally:
            self.close()
        return False


class Session:
    """One stream of inputs: send(channel, value), end(), and results
    (the outputs of this session, until its END)."""

    def __init__(self, pipeline, sid):
        self._p = pipeline
        self.id = sid
        self._ended = False

    def send(self, channel, value, timeout=None):
        self._p.send(channel, self.id, value, timeout)

    def end(self, timeout=None):
        if not self._ended:
            self._p.end(self.id, timeout)
            self._ended = True

    def results(self, channel, timeout=None):
        """This session's samples on output @channel until its END (each an
        Output; release or drop it before taking many)."""
        while True:
            out = self._p._receive_for(channel, self.id, timeout)
            if out.end:
                out.release()
                return
            yield out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.end()
        return False
