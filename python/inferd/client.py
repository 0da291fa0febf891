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
import json
import threading

from ._inferd import _Client

__all__ = ["ModelWorkerClient", "ResilientModelWorkerClient"]

_DONE = object()


class _Base:
    def __init__(self, urls, **opts):
        self._urls = list(urls)
        self._opts = opts
        self._c = None

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


class ModelWorkerClient(_Base):
    """One worker: ModelWorkerClient("http://127.0.0.1:8080") or
    ModelWorkerClient("unix:///run/inferd.sock"), api_key=..."""

    def __init__(self, url, *, api_key=None):
        super().__init__([url], api_key=api_key)


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
