"""asyncio clients of inferd model workers, over the C client library.

ModelWorkerClient talks to one worker (http://host:port or unix:///path);
ResilientModelWorkerClient to several, with the C resilient client's
policies: retries on transport errors, 503 and 504 only (never a 4xx),
full-jitter backoff, a deadline per call, a circuit breaker per worker,
and streams that fail over to another worker without losing or repeating
a piece (the seed is fixed; the replayed pieces are checked and skipped).
Calls run in threads (the C calls release the GIL); errors are
inferd.InferdError with the worker's code and message ("transport_error"
when no answer came).
"""
import asyncio
import ctypes
import json
import os
import threading
import urllib.parse

from ._inferd import InferdError, _Client

__all__ = ["ModelWorkerClient", "ResilientModelWorkerClient"]

_DONE = object()


class _Base:
    def __init__(self, urls, **opts):
        self._urls = list(urls)
        self._opts = opts
        self._c = None
        self._regions = []  # (SharedMemoryRegion, name, window offset, size) registered here
        self._stage_min = None  # stage inputs of this many bytes and more (None: never)
        self.last_via = {}  # how the last infer sent each input

    async def connect(self):
        """Open the client (connections are made by the calls)."""
        if self._c is None:
            self._c = _Client(self._urls, **self._opts)
        return self

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()
        return False

    async def close(self):
        c, self._c = self._c, None
        if c is not None:
            await asyncio.get_running_loop().run_in_executor(None, c.close)

    def _client(self):
        if self._c is None:
            raise ValueError("the client is not connected (await connect(), or use async with)")
        return self._c

    async def _run(self, fn, *args, **kw):
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw))

    async def health_check(self, ready=True):
        """True when the worker is live (ready: serving); raises otherwise."""
        return await self._run(self._client().health, ready)

    async def status(self):
        """The worker's /v1/status as a dict."""
        return json.loads(await self._run(self._client().status))

    async def complete(self, prompt, **params):
        """A completion: {"text", "finish_reason", "prompt_tokens",
        "completion_tokens", "seed", ...}. Parameters as the HTTP API names
        them: model, max_tokens, temperature, top_p, top_k, min_p, seed,
        stop, ignore_eos, timeout_ms."""
        return await self._run(self._client().complete, None, prompt=prompt, **params)

    async def chat(self, messages, **params):
        """A chat completion of @messages ([{"role", "content"}, ...])."""
        return await self._run(self._client().complete, None, messages=list(messages), **params)

    def stream(self, prompt, **params):
        """The completion's text pieces as they come (an async iterator)."""
        return self._stream(dict(prompt=prompt, **params))

    def chat_stream(self, messages, **params):
        """The chat completion's text pieces as they come."""
        return self._stream(dict(messages=list(messages), **params))

    async def _stream(self, request):
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()
        stop = threading.Event()
        client = self._client()

        def piece(index, text):
            loop.call_soon_threadsafe(queue.put_nowait, text)
            return stop.is_set()

        def run():
            try:
                result = client.complete(piece, **request)
                loop.call_soon_threadsafe(queue.put_nowait, (_DONE, result, None))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, (_DONE, None, e))

        task = loop.run_in_executor(None, run)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, tuple) and item and item[0] is _DONE:
                    if item[2] is not None and not stop.is_set():
                        raise item[2]
                    return
                yield item
        finally:
            stop.set()  # the consumer left: the next piece cancels the call
            try:
                await task
            except BaseException:  # noqa: BLE001 - the call's end is the thread's
                pass

    def _window(self, ptr, nbytes):
        """The registered region window holding [ptr, ptr + nbytes), or None."""
        for region, name, off, size in self._regions:
            lo = region.base + off
            if lo <= ptr and ptr + nbytes <= lo + size:
                return region, name, lo, size
        return None

    async def infer(self, model, inputs, outputs, params=None):
        """KServe inference of @model. @inputs: {name: NumPy array, PyTorch
        tensor, TensorBuffer, or a list of str/bytes (BYTES)}. An input whose
        memory lies in a SharedMemoryRegion registered with this worker goes
        by reference (zero copy); any other as binary data after the JSON.
        @outputs: a list of names (answered as binary data), or {name: None,
        "json", or (region, offset, nbytes): written into the region}.
        Returns {name: a NumPy array over the answer's bytes (no copy; a
        TensorBuffer for BF16), a view of the region, or a list of bytes}.
        A ResilientModelWorkerClient sends every tensor as binary data or
        JSON (a region is one worker's) and retries as for complete()."""
        import json as _json

        import numpy as np

        from . import torch_to_buffer
        from ._inferd import TensorBuffer
        ins, via, staged = [], {}, []  # staged: (index in ins, buffer) to copy to a region
        for name, value in inputs.items():
            if isinstance(value, (list, tuple)) and all(isinstance(x, (str, bytes))
                                                        for x in value):
                ins.append((name, "BYTES", (len(value),), _VIA["binary"],
                            _encode_bytes(value), None, 0))
                continue
            if isinstance(value, TensorBuffer):
                buf = value
            elif type(value).__module__.startswith("torch"):
                buf = torch_to_buffer(value)
            else:
                buf = TensorBuffer.from_numpy(np.asarray(value))
            if not buf.contiguous:
                raise ValueError(f"input '{name}' is not contiguous: pass a contiguous copy "
                                 "(np.ascontiguousarray, tensor.contiguous())")
            win = self._window(buf.data_ptr, buf.nbytes)
            if win:
                region, rname, lo, size = win
                ins.append((name, buf.dtype, buf.shape, _VIA["shm"], buf.nbytes,
                            (rname, lo, size), buf.data_ptr - lo))
                via[name] = "region"
            else:
                ins.append((name, buf.dtype, buf.shape, _VIA["binary"], buf, None, 0))
                via[name] = "binary"
                if self._stage_min is not None and buf.nbytes >= self._stage_min:
                    staged.append((len(ins) - 1, buf))
        if isinstance(outputs, (list, tuple)):
            outputs = {n: None for n in outputs}
        outs, shm_out = [], {}
        for name, how in outputs.items():
            if how is None or how in ("binary", "json"):
                outs.append((name, _VIA[how or "binary"], None, 0, 0))
                continue
            region, offset, nbytes = how
            win = self._window(region.base + offset, nbytes)
            if not win or win[0] is not region:
                raise ValueError(f"output '{name}': those bytes are not in a region "
                                 "registered with this worker")
            _, rname, lo, size = win
            outs.append((name, _VIA["shm"], (rname, lo, size), region.base + offset - lo,
                         nbytes))
            shm_out[name] = (region, offset, nbytes)
        pj = _json.dumps(params) if params else None
        client = self._client()
        stage = await self._stage(ins, via, staged) if staged else None
        try:
            try:
                js, got = await self._run(client.infer, model, ins, outs, pj)
            except InferdError as e:
                # The worker dropped the idle staging region (--shm-ttl):
                # register it again and resend.
                if stage is None or f"no region '{stage[1]}'" not in str(e):
                    raise
                await self._run(client.register, stage[1], stage[0].key, 0, stage[0].size)
                js, got = await self._run(client.infer, model, ins, outs, pj)
        finally:
            if stage is not None:
                await self._unstage(stage)
        self.last_via = via
        result = {}
        for name, dtype, shape, payload in got:
            if name in shm_out:
                region, offset, nbytes = shm_out[name]
                result[name] = region.numpy(_NUMPY[dtype], shape, offset) if dtype in _NUMPY \
                    else region.numpy(np.uint8, (nbytes,), offset)  # BYTES, BF16: the bytes
            elif dtype == "BYTES":
                result[name] = _decode_bytes(payload)
            elif dtype == "BF16":
                result[name] = payload
            else:
                result[name] = payload.to_numpy()
        self.last_answer = _json.loads(js)
        return result


_VIA = {"json": 0, "binary": 1, "shm": 2}


def _encode_bytes(items):
    out = bytearray()
    for x in items:
        b = x.encode() if isinstance(x, str) else bytes(x)
        out += len(b).to_bytes(4, "little") + b
    return bytes(out)


def _decode_bytes(raw):
    items, at = [], 0
    while at < len(raw):
        n = int.from_bytes(raw[at:at + 4], "little")
        items.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    return items


def _is_local(url):
    """Is the worker at @url on this machine (its Unix socket, a loopback
    address)?"""
    if url.startswith("unix://"):
        return True
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class ModelWorkerClient(_Base):
    """One worker: ModelWorkerClient("http://127.0.0.1:8080") or
    ModelWorkerClient("unix:///run/inferd.sock"), api_key=...

    shm="auto" (the default): when the worker is local, infer() copies each
    input of @shm_min_bytes or more that is not already in a registered
    region into a staging region of this client (made and registered on
    first use, reused by later calls) and sends it by reference: one copy
    in this process instead of the bytes through the socket. If the worker
    refuses the region (shared memory off, its quota, another /dev/shm),
    inputs go as binary data from then on (``shm_fallback`` says why).
    shm="never": always binary data (inputs already in a registered region
    still go by reference)."""

    _STAGE_IDLE_MAX = 4  # idle staging regions kept for later calls

    def __init__(self, url, *, api_key=None, shm="auto", shm_min_bytes=65536):
        if shm not in ("auto", "never"):
            raise ValueError(f"shm: expected 'auto' or 'never', not {shm!r}")
        if shm_min_bytes < 0:
            raise ValueError("shm_min_bytes: expected >= 0")
        super().__init__([url], api_key=api_key)
        if shm == "auto" and _is_local(url):
            self._stage_min = shm_min_bytes
        self._stage_idle = []  # staging regions no call uses
        self._stage_n = 0
        self.shm_fallback = None

    async def _stage(self, ins, via, staged):
        """Copy the @staged inputs into a staging region and point @ins at it;
        returns the region (give it back with _unstage), or None when the
        worker refused one (the inputs stay binary)."""
        from .shm import SharedMemoryRegion
        need = sum((b.nbytes + 63) & ~63 for _, b in staged)
        fits = [r for r in self._stage_idle if r[0].size >= need]
        if fits:
            region = min(fits, key=lambda r: r[0].size)
            self._stage_idle.remove(region)
        else:
            size = 1 << max(20, (need - 1).bit_length())
            self._stage_n += 1
            name = f"py-stage-{os.getpid()}-{id(self):x}-{self._stage_n}"
            try:
                r = SharedMemoryRegion.create(size)
            except OSError as e:
                self._stage_off(f"cannot make a region here: {e}")
                return None
            try:
                await self._run(self._client().register, name, r.key, 0, size)
            except InferdError as e:
                r.close()
                self._stage_off(f"the worker refused a region: {e}")
                return None
            region = (r, name)
        r, name = region
        at = 0
        for i, buf in staged:
            ctypes.memmove(r.base + at, buf.data_ptr, buf.nbytes)
            n, dt, shape = ins[i][0], ins[i][1], ins[i][2]
            ins[i] = (n, dt, shape, _VIA["shm"], buf.nbytes, (name, r.base, r.size), at)
            via[n] = "staged"
            at += (buf.nbytes + 63) & ~63
        return region

    def _stage_off(self, why):
        self._stage_min = None
        self.shm_fallback = why

    async def _unstage(self, region):
        if self._c is not None and len(self._stage_idle) < self._STAGE_IDLE_MAX:
            self._stage_idle.append(region)
        else:
            await self._drop_stage(region)

    async def _drop_stage(self, region):
        r, name = region
        try:
            if self._c is not None:
                await self._run(self._c.unregister, name)
        except InferdError:
            pass  # the worker forgets it anyway (its TTL, or it is gone)
        finally:
            r.close()

    async def close(self):
        idle, self._stage_idle = self._stage_idle, []
        for region in idle:
            await self._drop_stage(region)
        await super().close()

_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
          "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
          "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64"}


class ResilientModelWorkerClient(_Base):
    """Several workers serving the same models, with retries and failover."""

    def __init__(self, urls, *, api_key=None, max_retries=5, retry_delay_ms=50,
                 deadline_ms=60000, breaker_failures=3, breaker_cooldown_ms=2000):
        if max_retries < 0:
            raise ValueError("max_retries: expected >= 0")
        super().__init__(urls, api_key=api_key, attempts=max_retries + 1,
                         backoff_ms=retry_delay_ms, deadline_ms=deadline_ms,
                         breaker_failures=breaker_failures, cooldown_ms=breaker_cooldown_ms)

    def stats(self):
        """Counters: calls, attempts, failovers, replayed pieces, and per
        worker its breaker state, failures in a row, attempts, failures,
        successes and times opened."""
        return self._client().stats()
