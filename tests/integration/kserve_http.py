"""Helpers of the Python clients in the KServe integration tests
(test_serve_tensors.sh, test_serve_llm_tensors.sh): one keep-alive HTTP
connection per door (TCP, the Unix socket), and shared-memory regions made
by the client (multiprocessing.shared_memory, kept from its resource
tracker: the tests unlink them) and registered with the worker."""
import http.client
import json
import socket
import sys
from multiprocessing import resource_tracker, shared_memory


def fail(msg):
    sys.exit("FAIL: " + msg)


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


class Doors:
    """A connection to the worker on TCP ("tcp") and its Unix socket ("unix")."""

    def __init__(self, port, sock):
        self.conns = {"tcp": http.client.HTTPConnection("127.0.0.1", port, timeout=60),
                      "unix": UnixConn(sock)}

    def request(self, door, method, path, body=None, headers=None):
        c = self.conns[door]
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()

    def post_json(self, door, path, obj):
        st, _, b = self.request(door, "POST", path, json.dumps(obj).encode(),
                                {"Content-Type": "application/json"})
        return st, json.loads(b) if b else None

    def register(self, door, name, m, offset=0, size=None):
        """Register region @m (from region()) as @name; fail the test if refused."""
        st, b = self.post_json(door, f"/v2/systemsharedmemory/region/{name}/register",
                               {"key": "/" + m.name, "offset": offset,
                                "byte_size": size or m.size})
        if st != 200:
            fail(f"register {name}: {st} {b}")


def region(tag, name, size):
    """A new shared-memory object "/TAG-NAME" of @size bytes."""
    m = shared_memory.SharedMemory(name=f"{tag}-{name}", create=True, size=size)
    resource_tracker.unregister(m._name, "shared_memory")
    return m
