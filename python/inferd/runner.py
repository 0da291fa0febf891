"""``python -m inferd.runner``: a Python pipeline node's process
(docs/pipeline.md, "Node processes and the control protocol").

The manager starts it with a SOCK_SEQPACKET control socket on descriptor
``$INFERD_NODE_FD`` (3). The runner reads the configuration (with the
channels' descriptors: the inputs' in order, then the outputs'), imports
``module`` (from PYTHONPATH), makes ``class(**options)``, calls its
``init(progress)`` (each call a progress message), says ready, waits for
run, then processes:

- one thread per input receives (the GIL released while it waits) into one
  queue; the main thread calls the node;
- one input: each sample is processed as it comes; several: one sample of
  each input of the same session is processed together (samples wait in
  their channel's slot meanwhile); a sample left without partners when the
  session ends is dropped with a warning on stderr;
- END on every input of a session: ``end()``, then END on every output;
- every input sample goes back to its channel when process returns (a view
  of it kept beyond that is an error: copy what you keep).

"stop" from the manager (or its socket closing) shuts the inputs down and
the runner exits 0 (at once if the node is busy, after a short grace); so
does a channel shut down under a receive or a loan. Any other failure
(import, init, process, a malformed sample) is reported to the manager
as ``{"type":"error","message":"Type: message"}``, with the traceback on
stderr, and the runner exits 1. The node's stdout goes to stderr (the
manager's log): the caller's stdout is not the node's.
"""
import collections
import gc
import importlib
import json
import os
import queue
import socket
import sys
import threading
import traceback

from . import _inferd
from .pipeline import Publisher, Subscriber

PACKET_MAX = 65536  # one control message, at most
FDS_MAX = 64        # descriptors with the configuration, at most
STOP_GRACE_S = 0.5  # after "stop", how long a busy node may take to wind down
MESSAGE_MAX = 4096  # characters of an error or progress message sent

_SAMPLE, _EOF, _ERROR, _STOP = range(4)


class _Quit(Exception):
    """Leave quietly with status 0 (stopped, or the channels shut down)."""


def _is_shutdown(e):
    return isinstance(e, _inferd.UnavailableError) and "shut down" in str(e)


def _describe(e):
    return f"{type(e).__name__}: {e}"


class Runner:
    def __init__(self, sock):
        self.sock = sock
        self.send_lock = threading.Lock()
        self.q = queue.SimpleQueue()
        self.run_event = threading.Event()
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.subs = []
        self.pubs = {}
        self.inputs = []
        self.outputs = []
        self.node = None
        self.threads = []  # the receivers
        self.pending = {}  # several inputs: session -> [deque of Samples per input]

    # ---- control messages ----

    def send(self, msg):
        if "message" in msg:
            msg["message"] = str(msg["message"])[:MESSAGE_MAX]
        data = json.dumps(msg, ensure_ascii=False).encode("utf-8")
        while len(data) > PACKET_MAX and msg.get("message"):
            msg["message"] = msg["message"][:len(msg["message"]) // 2]
            data = json.dumps(msg, ensure_ascii=False).encode("utf-8")
        with self.send_lock:
            self.sock.send(data)

    def progress(self, fraction, message=""):
        """Report start-up progress (0..1) to the manager."""
        f = float(fraction)
        self.send({"type": "progress", "fraction": min(1.0, max(0.0, f)),
                   "message": str(message)})

    def read_config(self):
        msg, fds, flags, _ = socket.recv_fds(self.sock, PACKET_MAX, FDS_MAX)
        for fd in fds:
            os.set_inheritable(fd, False)
        try:
            if not msg:
                raise _Quit()  # the manager went before configuring us
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError("the configuration packet was truncated")
            cfg = json.loads(msg.decode("utf-8"))
            if not isinstance(cfg, dict) or cfg.get("type") != "config":
                raise ValueError(f"expected the configuration, got {msg[:200]!r}")
            ins, outs = cfg.get("inputs", []), cfg.get("outputs", [])
            if (not isinstance(ins, list) or not isinstance(outs, list)
                    or not all(isinstance(n, str) for n in ins + outs)):
                raise ValueError("configuration: inputs and outputs must be lists of names")
            if not isinstance(cfg.get("module"), str) or not isinstance(cfg.get("class"), str):
                raise ValueError("configuration: no module and class for a Python node")
            if not isinstance(cfg.get("options", {}), dict):
                raise ValueError("configuration: options must be an object")
            if len(fds) != len(ins) + len(outs):
                raise ValueError(f"configuration: {len(fds)} descriptors for {len(ins)} inputs "
                                 f"and {len(outs)} outputs")
            self.inputs, self.outputs = ins, outs
            self.subs = [Subscriber(fd) for fd in fds[:len(ins)]]
            self.pubs = {n: Publisher(fd) for n, fd in zip(outs, fds[len(ins):])}
            return cfg
        finally:
            for fd in fds:  # the channels are mapped: the descriptors can go
                os.close(fd)

    def watch(self):
        """The control socket after the configuration: run, stop."""
        while True:
            try:
                data = self.sock.recv(PACKET_MAX)
            except OSError:
                data = b""
            if not data:
                break  # the manager went: as a stop
            try:
                t = json.loads(data.decode("utf-8")).get("type")
            except (ValueError, AttributeError):
                print(f"inferd.runner: an unreadable control message: {data[:200]!r}",
                      file=sys.stderr)
                continue
            if t == "run":
                self.run_event.set()
            elif t == "stop":
                break
            else:
                print(f"inferd.runner: an unknown control message '{t}'", file=sys.stderr)
        self.stopping.set()
        self.run_event.set()
        for s in self.subs:
            try:
                s.shutdown()  # wakes the receivers
            except ValueError:
                pass
        self.q.put((_STOP, None, None))
        if not self.done.wait(STOP_GRACE_S):
            _flush()
            os._exit(0)  # the node is busy: nothing of it is wanted any more

    # ---- the node ----

    def make_node(self, cfg):
        mod = importlib.import_module(cfg["module"])
        obj = mod
        for part in cfg["class"].split("."):
            if not hasattr(obj, part):
                raise AttributeError(f"module '{cfg['module']}' has no class '{cfg['class']}'")
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{cfg['module']}.{cfg['class']} is not a class")
        node = obj(**cfg.get("options", {}))
        if not callable(getattr(node, "process", None)):
            raise TypeError(f"{cfg['module']}.{cfg['class']} has no process(inputs) method")
        node.name = cfg.get("node")
        node.pipeline = cfg.get("pipeline")
        node.input_names = list(self.inputs)
        node.output_names = list(self.outputs)
        node.session = None
        node._publishers = self.pubs
        return node

    def emit(self, out, session):
        """Publish what process or end returned."""
        if out is None:
            return
        if isinstance(out, dict):
            batches = [out]
        elif isinstance(out, list) and all(d is None or isinstance(d, dict) for d in out):
            batches = out
        elif len(self.outputs) == 1:
            batches = [{self.outputs[0]: out}]
        else:
            raise TypeError(f"the node returned {type(out).__name__}: expected None, "
                            "{output: value} or a list of such dicts")
        for d in batches:
            for name, value in (d or {}).items():
                pub = self.pubs.get(name)
                if pub is None:
                    raise ValueError(f"the node returned output '{name}'; its outputs are "
                                     f"{self.outputs}")
                if value is not None:
                    self.channel_call(pub.send, value, session)
        for name, pub in self.pubs.items():
            if pub.loaned is not None:
                raise RuntimeError(f"the node loaned an array on output '{name}' and did not "
                                   "return it")

    def channel_call(self, fn, *args):
        try:
            return fn(*args)
        except _inferd.UnavailableError as e:
            if _is_shutdown(e):
                raise _Quit() from None
            raise

    def release(self, samples, session):
        for i, s in samples:
            try:
                s.release()
            except BufferError:
                gc.collect()  # a view held only by a reference cycle
                try:
                    s.release()
                except BufferError:
                    raise RuntimeError(
                        f"the node kept a view of input '{self.inputs[i]}' (session {session}) "
                        "after process returned: copy what you keep (np.array(x))") from None

    def process(self, samples, session):
        """Call process on one sample of each input (@samples: [(i, Sample)])."""
        self.node.session = session
        inputs = {self.inputs[i]: s.value for i, s in samples}
        out = self.node.process(inputs)
        del inputs
        self.emit(out, session)
        del out
        self.release(samples, session)

    def end(self, session):
        self.node.session = session
        end = getattr(self.node, "end", None)
        if end is not None:
            self.emit(end(), session)
        for pub in self.pubs.values():
            self.channel_call(pub.end, session)

    def on_sample(self, i, s):
        session = s.session
        if len(self.inputs) == 1:
            if s.end:
                s.release()
                self.end(session)
            else:
                self.process([(i, s)], session)
            return
        queues = self.pending.get(session)
        if queues is None:
            queues = self.pending[session] = [collections.deque() for _ in self.inputs]
        queues[i].append(s)
        while all(queues):
            fronts = [q[0] for q in queues]
            if all(f.end for f in fronts):
                for q in queues:
                    q.popleft().release()
                self.end(session)
            elif any(f.end for f in fronts):
                # Inputs that ended have nothing to join these with.
                for k, q in enumerate(queues):
                    if not q[0].end:
                        print(f"inferd.runner: node '{self.node.name}': session {session}: a "
                              f"sample of input '{self.inputs[k]}' has no partner on the "
                              "inputs that ended: dropped", file=sys.stderr)
                        q.popleft().release()
            else:
                self.process([(k, q.popleft()) for k, q in enumerate(queues)], session)
        if not any(queues):
            del self.pending[session]

    def receive_loop(self, i, sub):
        while True:
            try:
                s = sub.receive()
            except BaseException as e:  # noqa: B902 -- handed to the main thread
                self.q.put((_EOF if _is_shutdown(e) else _ERROR, i, e))
                return
            self.q.put((_SAMPLE, i, s))

    # ---- the whole ----

    def main(self):
        cfg = self.read_config()
        threading.Thread(target=self.watch, name="inferd-control", daemon=True).start()
        self.node = self.make_node(cfg)
        init = getattr(self.node, "init", None)
        if init is not None:
            init(self.progress)
        self.send({"type": "ready"})
        self.run_event.wait()
        if self.stopping.is_set():
            raise _Quit()
        for i, sub in enumerate(self.subs):
            t = threading.Thread(target=self.receive_loop, args=(i, sub),
                                 name=f"inferd-input-{self.inputs[i]}", daemon=True)
            t.start()
            self.threads.append(t)
        while True:
            kind, i, x = self.q.get()
            if kind == _STOP or kind == _EOF:
                raise _Quit()
            if kind == _ERROR:
                if isinstance(x, ValueError):
                    raise ValueError(f"input '{self.inputs[i]}': {x}") from x
                raise x
            self.on_sample(i, x)

    def shutdown_inputs(self):
        for s in self.subs:
            try:
                s.shutdown()
            except ValueError:
                pass


def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass


def main():
    # The node's prints go to the manager's log, not to the caller's stdout.
    try:
        sys.stdout.flush()
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    except OSError:
        pass
    try:
        fd = int(os.environ.get("INFERD_NODE_FD", "3"))
        sock = socket.socket(fileno=fd)
    except (OSError, ValueError) as e:
        print(f"inferd.runner: no control socket on descriptor "
              f"{os.environ.get('INFERD_NODE_FD', '3')}: {e} (the pipeline's manager starts "
              "this program)", file=sys.stderr)
        return 1
    r = Runner(sock)
    status = 0
    try:
        r.main()
    except _Quit:
        status = 0
    except Exception as e:
        if _is_shutdown(e) or r.stopping.is_set():
            status = 0
        else:
            status = 1
            traceback.print_exc()
            try:
                r.send({"type": "error", "message": _describe(e)})
            except OSError:
                pass
    r.shutdown_inputs()  # the receivers finish once they took what was published
    for t in r.threads:
        t.join(STOP_GRACE_S)
    r.done.set()
    if any(t.is_alive() for t in r.threads):
        # A receiver still waits in a channel: leave without tearing the
        # interpreter down under it.
        _flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
