"""Pipeline nodes in Python (docs/pipeline.md): the sample header, channel
publishers and subscribers over NumPy without copies, and the Node base
class that ``python -m inferd.runner`` runs inside a node process.

- ``Publisher(fd)``: ``loan(dtype, shape, session)`` gives a writable NumPy
  array in the channel's next slot, ``publish()`` publishes it; ``send(value,
  session)`` copies a NumPy array, PyTorch tensor, bytes or str in once;
  ``end(session)`` ends a session.
- ``Subscriber(fd)``: ``receive(timeout=None)`` gives a ``Sample`` whose
  ``array`` is a read-only NumPy view of the channel's memory (``text`` for
  text samples); ``release()`` (or ``with``) gives it back.
- ``Node``: subclass it (``init``, ``process``, ``end``), or decorate a
  function with ``@node``.
"""
import inspect
import struct
import sys

import numpy as np

from . import _inferd

__all__ = ["HEADER", "HEADER_BYTES", "MAGIC", "END", "TEXT", "Node", "Publisher", "Sample",
           "Subscriber", "elem_of_dtype", "dtype_of_elem", "node", "pack_header",
           "parse_header"]

# ---- the sample header (docs/pipeline.md, include/inferd/pipeline.h) ----

MAGIC = 0x53444649  # "IFDS"
END = 1             # the session ends; no payload
TEXT = 2            # the payload is UTF-8 text (elem U8, ndim 1)
DIMS = 4
HEADER = struct.Struct("<IIQII4qQ")  # magic flags session elem ndim shape[4] bytes
HEADER_BYTES = HEADER.size
assert HEADER_BYTES == 64

# inferd_elem (include/inferd/tensor.h).
ELEM_BOOL, ELEM_U8, ELEM_U16, ELEM_U32, ELEM_U64 = 0, 1, 2, 3, 4
ELEM_I8, ELEM_I16, ELEM_I32, ELEM_I64 = 5, 6, 7, 8
ELEM_F16, ELEM_BF16, ELEM_F32, ELEM_F64 = 9, 10, 11, 12
ELEM_BYTES = 13  # never on a channel

_ELEM_DTYPE = {
    ELEM_BOOL: np.dtype(np.bool_), ELEM_U8: np.dtype(np.uint8), ELEM_U16: np.dtype(np.uint16),
    ELEM_U32: np.dtype(np.uint32), ELEM_U64: np.dtype(np.uint64), ELEM_I8: np.dtype(np.int8),
    ELEM_I16: np.dtype(np.int16), ELEM_I32: np.dtype(np.int32), ELEM_I64: np.dtype(np.int64),
    ELEM_F16: np.dtype(np.float16), ELEM_F32: np.dtype(np.float32),
    ELEM_F64: np.dtype(np.float64),
    # NumPy has no bfloat16: its raw bits, as int16 (which PyTorch 1.13 takes:
    # torch.from_numpy(a.copy()).view(torch.bfloat16)).
    ELEM_BF16: np.dtype(np.int16),
}
_ELEM_SIZE = {e: d.itemsize for e, d in _ELEM_DTYPE.items()}
_DTYPE_ELEM = {(d.kind, d.itemsize): e for e, d in _ELEM_DTYPE.items() if e != ELEM_BF16}


def elem_of_dtype(dtype):
    """The inferd_elem code of a NumPy dtype (byte order aside): TypeError
    for types a channel does not carry (complex, objects, strings...)."""
    d = np.dtype(dtype)
    e = _DTYPE_ELEM.get((d.kind, d.itemsize))
    if e is None or d.fields is not None or d.subdtype is not None:
        raise TypeError(f"a pipeline sample cannot hold {d} (bool, int8..int64, uint8..uint64, "
                        "float16/32/64)")
    return e


def dtype_of_elem(elem):
    """The NumPy dtype of inferd_elem @elem (BF16: int16, its raw bits)."""
    try:
        return _ELEM_DTYPE[elem]
    except KeyError:
        raise ValueError(f"element type {elem} is not one a sample holds") from None


def pack_header(flags, session, elem, shape, nbytes):
    """The 64-byte header of a sample (magic, flags, session, elem, shape up
    to 4 dimensions, payload bytes)."""
    shape = tuple(int(n) for n in shape)
    if len(shape) > DIMS:
        raise ValueError(f"a sample has at most {DIMS} dimensions, not {len(shape)}")
    if not 0 <= session < 1 << 64:
        raise ValueError(f"session {session}: expected 0 to 2^64-1")
    return HEADER.pack(MAGIC, flags, session, elem, len(shape),
                       *(shape + (0,) * (DIMS - len(shape))), nbytes)


def parse_header(buf, sample_bytes=None):
    """(flags, session, elem, shape, nbytes) of the header at the start of
    @buf, checked (magic, element type, shape against bytes, bytes within
    @sample_bytes, by default len(buf)); ValueError says what is wrong."""
    if sample_bytes is None:
        sample_bytes = len(memoryview(buf).cast("B"))
    if sample_bytes < HEADER_BYTES:
        raise ValueError(f"sample: {sample_bytes} bytes, shorter than its {HEADER_BYTES}-byte "
                         "header")
    magic, flags, session, elem, ndim, s0, s1, s2, s3, nbytes = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ValueError(f"sample: no header (magic {magic:08x}, expected {MAGIC:08x})")
    if nbytes > sample_bytes - HEADER_BYTES:
        raise ValueError(f"sample: its header says {nbytes} payload bytes, "
                         f"{sample_bytes - HEADER_BYTES} follow")
    if flags & END:
        return flags, session, elem, (), 0
    if elem not in _ELEM_DTYPE or ndim > DIMS:
        raise ValueError(f"sample: element type {elem}, {ndim} dimensions")
    shape = (s0, s1, s2, s3)[:ndim]
    n = 1
    for d, k in enumerate(shape):
        if k < 0:
            raise ValueError(f"sample: dimension {d} is {k}")
        n *= k
    if n * _ELEM_SIZE[elem] != nbytes:
        raise ValueError(f"sample: its shape {shape} holds {n} elements of {_ELEM_SIZE[elem]} "
                         f"bytes, not {nbytes} bytes")
    if flags & TEXT and (elem != ELEM_U8 or ndim != 1):
        raise ValueError("sample: text is U8 of one dimension")
    return flags, session, elem, shape, nbytes


def _timeout_ms(timeout):
    return -1 if timeout is None else max(0, int(timeout * 1000))


def _view(buf, dtype, shape):
    """An array of @dtype and @shape over @buf's payload, without a copy.
    np.frombuffer keeps @buf's buffer export while any view of the array
    is alive (np.ndarray(buffer=...) lets go of it at once), so a sample
    can tell that views of it are still out."""
    n = 1
    for k in shape:
        n *= k
    return np.frombuffer(buf, dtype, n, HEADER_BYTES).reshape(shape)


def _is_torch(value):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _payload(value):
    """(flags, elem, ndarray or bytes) for a value to send."""
    if isinstance(value, str):
        b = value.encode("utf-8")
        return TEXT, ELEM_U8, b
    if isinstance(value, (bytes, bytearray)):
        return 0, ELEM_U8, np.frombuffer(value, np.uint8)
    if _is_torch(value):
        import torch
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            return 0, ELEM_BF16, t.view(torch.int16).numpy()
        a = t.numpy()
        return 0, elem_of_dtype(a.dtype), a
    a = np.asarray(value)
    return 0, elem_of_dtype(a.dtype), a


# ---- publishers ----

class Publisher:
    """The publisher of a channel (its descriptor @fd, not taken: the caller
    still closes it). One at a time per channel; samples in order."""

    def __init__(self, fd, timeout=None):
        self._ch = _inferd._Channel(fd, "publisher")
        self.timeout = timeout  # seconds for loans; None: no limit
        self._loan = None       # (array, flags, session, elem, shape, slot memoryview)

    @property
    def slot_bytes(self):
        return self._ch.slot_bytes

    @property
    def capacity(self):
        """The largest payload: slot_bytes less the header."""
        return self._ch.slot_bytes - HEADER_BYTES

    def _check_fits(self, nbytes):
        if nbytes > self.capacity:
            raise ValueError(f"a sample of {nbytes} bytes does not fit the channel's "
                             f"{self.capacity} (slot_bytes {self.slot_bytes} less the "
                             f"{HEADER_BYTES}-byte header)")

    def _slot(self, timeout):
        return self._ch.loan(_timeout_ms(self.timeout if timeout is ... else timeout))

    def loan(self, dtype, shape, session, timeout=...):
        """A writable NumPy array of @dtype and @shape in the channel's next
        slot (no copy: write it in place), for session @session; publish()
        publishes it. Waits for a free slot up to @timeout seconds (None: no
        limit; default: the publisher's)."""
        if self._loan is not None:
            raise RuntimeError("a loan is out: publish() it first")
        dt = np.dtype(dtype).newbyteorder("=")
        elem = elem_of_dtype(dt)
        shape = tuple(int(n) for n in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if len(shape) > DIMS or any(n < 0 for n in shape):
            raise ValueError(f"shape {shape}: up to {DIMS} dimensions, none negative")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        self._check_fits(nbytes)
        mv = self._slot(timeout)
        arr = _view(mv, dt, shape)
        self._loan = (arr, 0, session, elem, shape, mv)
        return arr

    @property
    def loaned(self):
        """The array of the loan out, or None."""
        return self._loan[0] if self._loan else None

    def publish(self):
        """Publish the loaned array (the header says its dtype and shape)."""
        if self._loan is None:
            raise RuntimeError("no loan to publish: loan() first")
        arr, flags, session, elem, shape, mv = self._loan
        nbytes = arr.nbytes
        mv[:HEADER_BYTES] = pack_header(flags, session, elem, shape, nbytes)
        self._loan = None
        self._ch.publish(HEADER_BYTES + nbytes)

    def send(self, value, session, timeout=...):
        """Publish @value for session @session, copied once into the slot: a
        NumPy array (or anything np.asarray takes), a PyTorch tensor, bytes
        (a uint8 array) or str (a text sample). The loaned array itself is
        published without a copy."""
        if self._loan is not None:
            if value is self._loan[0]:
                self.publish()
                return
            raise RuntimeError("a loan is out on this channel: publish() it, or send the loaned "
                               "array")
        flags, elem, data = _payload(value)
        if isinstance(data, bytes):
            shape, nbytes = (len(data),), len(data)
        else:
            shape, nbytes = data.shape, data.nbytes
            if data.ndim > DIMS:
                raise ValueError(f"a sample has at most {DIMS} dimensions, not {data.ndim}")
        self._check_fits(nbytes)
        header = pack_header(flags, session, elem, shape, nbytes)
        mv = self._slot(timeout)
        # A failure here leaves the slot loaned: the next loan gets it again.
        if isinstance(data, bytes):
            mv[HEADER_BYTES:HEADER_BYTES + nbytes] = data
        elif nbytes:
            dst = _view(mv, data.dtype.newbyteorder("="), data.shape)
            np.copyto(dst, data, casting="equiv")
        mv[:HEADER_BYTES] = header
        self._ch.publish(HEADER_BYTES + nbytes)

    def end(self, session, timeout=...):
        """Publish the END sample of session @session."""
        if self._loan is not None:
            raise RuntimeError("a loan is out on this channel: publish() it first")
        mv = self._slot(timeout)
        mv[:HEADER_BYTES] = pack_header(END, session, ELEM_U8, (), 0)
        self._ch.publish(HEADER_BYTES)

    def stats(self):
        return self._ch.stats()

    def shutdown(self):
        """Shut the channel down for every process (waits end with
        UnavailableError)."""
        self._ch.shutdown()

    def close(self):
        """Give the publisher's seat back (the mapping goes once no loaned
        array is left)."""
        self._loan = None
        self._ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- subscribers ----

class Sample:
    """A received sample: ``session``, ``end`` (the session's END),
    ``text`` (str, for text samples, else None), ``array`` (a read-only
    NumPy view of the channel's memory, None for END), ``flags``, ``elem``,
    ``shape``, ``seq``. ``release()`` (or leaving ``with``) gives it back to
    the channel: do so soon, since the publisher reuses the slot only then,
    and not while views of ``array`` are alive (BufferError: copy what you
    keep)."""

    __slots__ = ("_raw", "flags", "session", "elem", "shape", "nbytes", "seq", "_array",
                 "_text")

    def __init__(self, raw):
        self._raw = raw
        self.flags, self.session, self.elem, self.shape, self.nbytes = \
            parse_header(raw, raw.nbytes)
        self.seq = raw.seq
        self._array = None
        self._text = None

    @property
    def end(self):
        return bool(self.flags & END)

    @property
    def is_text(self):
        return bool(self.flags & TEXT)

    @property
    def released(self):
        return self._raw.released

    @property
    def array(self):
        if self.end:
            return None
        if self._array is None:
            if self._raw.released:
                raise ValueError("sample: released")
            self._array = _view(self._raw, _ELEM_DTYPE[self.elem], self.shape)
        return self._array

    @property
    def text(self):
        if not self.flags & TEXT:
            return None
        if self._text is None:
            if self._raw.released:
                raise ValueError("sample: released")
            with memoryview(self._raw) as mv:
                self._text = str(mv[HEADER_BYTES:HEADER_BYTES + self.nbytes], "utf-8")
        return self._text

    @property
    def value(self):
        """What a node's process() gets: text as str, else the array."""
        return self.text if self.flags & TEXT else self.array

    def release(self):
        self._array = None
        self._raw.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __repr__(self):
        kind = "END" if self.end else "text" if self.is_text else \
            f"{'bfloat16' if self.elem == ELEM_BF16 else _ELEM_DTYPE[self.elem]}{list(self.shape)}"
        return f"<Sample session={self.session} {kind}, {self.nbytes} bytes>"


class Subscriber:
    """A subscriber of a channel (its descriptor @fd, not taken): it
    receives the samples published after it opened, in order."""

    def __init__(self, fd):
        self._ch = _inferd._Channel(fd, "subscriber")

    def receive(self, timeout=None):
        """The next Sample, waiting up to @timeout seconds (None: no limit;
        DeadlineExceededError then). UnavailableError once the channel is
        shut down and drained; ValueError for a sample without a valid
        header (given back at once)."""
        raw = self._ch.receive(_timeout_ms(timeout))
        try:
            return Sample(raw)
        except ValueError:
            raw.release()
            raise

    @property
    def slot_bytes(self):
        return self._ch.slot_bytes

    def stats(self):
        return self._ch.stats()

    def shutdown(self):
        self._ch.shutdown()

    def close(self):
        """Give the seat back (the mapping goes once no sample is held)."""
        self._ch.close()

    def __iter__(self):
        """Samples until the channel is shut down."""
        while True:
            try:
                yield self.receive()
            except _inferd.UnavailableError:
                return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- nodes ----

class Node:
    """A pipeline node run by ``python -m inferd.runner``: the manifest names
    its module and class; it is made with the manifest's options as keywords
    (kept in ``self.options``).

    Before ``init`` the runner sets ``self.name`` (the node's), ``self.pipeline``,
    ``self.input_names`` and ``self.output_names`` (channel names).

    - ``init(progress)``: load what it needs; ``progress(fraction, message)``
      reports start-up progress to the manager.
    - ``process(inputs)``: ``inputs`` is ``{input name: value}`` (a read-only
      NumPy array viewing the channel's memory, or str for text samples; one
      of each input for the same session), ``self.session`` the session. It
      returns None, ``{output name: value}`` (a NumPy array, PyTorch tensor,
      bytes, str) or a list of such dicts (several samples, in order); with
      one output, a bare value goes to it. The input arrays go back to their
      channels when process returns: copy what you keep.
    - ``end()``: the session ``self.session`` ended (END on every input); it
      may return outputs as process does. Then END goes to every output.
    - ``loan(output, dtype, shape)``: a writable array in the output
      channel's next slot; returned as that output's value, it is published
      without a copy.
    """

    session = None  # the session being processed

    def __init__(self, **options):
        self.options = options

    def init(self, progress):
        pass

    def process(self, inputs):
        raise NotImplementedError(f"{type(self).__name__}.process")

    def end(self):
        return None

    def loan(self, output, dtype, shape):
        pubs = getattr(self, "_publishers", None)
        if not pubs or output not in pubs:
            raise ValueError(f"loan: no output '{output}' (the node's: "
                             f"{list(pubs) if pubs else []})")
        return pubs[output].loan(dtype, shape, self.session)


def _arity(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               and p.default is p.empty)


def node(fn=None, *, init=None, end=None):
    """Make a Node class of a function: ``@node`` on ``f(inputs)`` (or
    ``f(self, inputs)``, to reach ``self.options``, ``self.session`` and
    what init set). ``@node(init=g, end=h)``: ``g(self, progress)`` runs as
    init, ``h(self)`` as end. The class takes the function's name, so the
    manifest names it as "class"."""

    def make(f):
        two = _arity(f) >= 2

        def process(self, inputs):
            return f(self, inputs) if two else f(inputs)

        ns = {"process": process, "__doc__": f.__doc__, "__module__": f.__module__,
              "__qualname__": f.__qualname__}
        if init is not None:
            ns["init"] = lambda self, progress: (init(self, progress)
                                                 if _arity(init) >= 2 else init(self))
        if end is not None:
            ns["end"] = lambda self: end(self)
        return type(f.__name__, (Node,), ns)

    return make(fn) if fn is not None else make
