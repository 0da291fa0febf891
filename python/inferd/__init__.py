"""inferd from Python.

- In-process models: ``get_or_load(path, **opts)`` gives a ``Model`` from the
  process registry (one instance per model, loaded once, shared by every
  caller; released with ``close()``, ``with`` or garbage collection; kept
  alive for ``keep_alive_ms`` after the last handle). ``registry_info()``
  lists the loaded models, ``configure(budget_bytes=...)`` sets the memory
  budget before the first load.
- ``TensorBuffer``: tensor memory shared with NumPy and PyTorch without
  copies (the buffer protocol, __array_interface__, DLPack 0.6).
- Pipelines: ``Pipeline`` builds a manifest and starts its nodes, each in
  its own process (inferd.manager).
- Pipeline nodes (``python -m inferd.runner`` runs them): subclass ``Node``
  or decorate a function with ``@node``; ``Publisher`` and ``Subscriber``
  send and receive samples on channels without copies (inferd.pipeline).
- Errors are ``InferdError`` with the worker's ``code``, ``status``,
  ``param`` and ``message``, raised as a subclass by kind
  (``InvalidRequestError``, ``NotFoundError``, ``OverloadedError``,
  ``TransportError``, ...).
"""
import asyncio
from collections import namedtuple

from ._inferd import (AuthenticationError, ConflictError, DeadlineExceededError, InferdError,
                      InternalError, InvalidRequestError, NotFoundError, OverloadedError,
                      RequestCancelledError, TensorBuffer, TransportError, UnavailableError,
                      configure, registry_info)
from ._inferd import Model as _Model
from ._inferd import get_or_load as _get_or_load
from .client import ModelWorkerClient, ResilientModelWorkerClient
from .shm import SharedMemoryRegion

__all__ = ["AuthenticationError", "ConflictError", "DeadlineExceededError", "InferdError",
           "InternalError", "InvalidRequestError", "Model", "ModelWorkerClient", "Node",
           "NotFoundError", "OverloadedError", "Pipeline", "Publisher", "RequestCancelledError",
           "ResilientModelWorkerClient", "SharedMemoryRegion", "Subscriber", "TensorBuffer",
           "Token", "TransportError", "UnavailableError", "buffer_to_torch", "configure",
           "get_or_load", "node", "registry_info", "torch_to_buffer"]

_PIPELINE = ("Node", "Publisher", "Subscriber", "node")
_MANAGER = ("Pipeline", "RunningPipeline", "Session", "Output")


def __getattr__(name):
    # The pipeline's names load inferd.pipeline (and NumPy) when first used.
    if name in _PIPELINE:
        from . import pipeline
        return getattr(pipeline, name)
    if name in _MANAGER:
        from . import manager
        return getattr(manager, name)
    raise AttributeError(f"module 'inferd' has no attribute '{name}'")


Token = namedtuple("Token", ["id", "text"])
Token.__doc__ = """A generated token: its id (-1 for text held back until the end) and
the text it makes visible (whole UTF-8 characters, never part of a stop
string; may be empty)."""


class Generation:
    """An iterator of Tokens; ``result`` holds the end once iterated."""

    def __init__(self, raw):
        self._raw = raw

    def __iter__(self):
        return self

    def __next__(self):
        return Token(*next(self._raw))

    @property
    def result(self):
        return self._raw.result

    def cancel(self):
        self._raw.cancel()


class Model(_Model):
    """A handle on a model of the process registry (see get_or_load)."""

    def generate(self, prompt, **sampling):
        """Tokens of @prompt (text, or token ids) as they are generated.
        Sampling keywords as in the HTTP API: max_tokens, temperature, top_p,
        top_k, min_p, seed, stop, ignore_eos, repeat_penalty."""
        return Generation(self._generate(prompt, **sampling))

    async def agenerate(self, prompt, **sampling):
        """generate() for asyncio: each token is awaited in a thread, so the
        event loop runs while the engine works."""
        gen = self.generate(prompt, **sampling)
        loop = asyncio.get_running_loop()
        done = object()
        try:
            while True:
                tok = await loop.run_in_executor(None, next, gen, done)
                if tok is done:
                    return
                yield tok
        finally:
            gen.cancel()

    def complete(self, prompt, **sampling):
        """The whole generation: {"text", "ids", "finish_reason",
        "prompt_tokens", "completion_tokens", "seed", ...}."""
        gen = self.generate(prompt, **sampling)
        toks = list(gen)
        out = dict(gen.result)
        out["text"] = "".join(t.text for t in toks)
        out["ids"] = [t.id for t in toks if t.id >= 0]
        return out


def get_or_load(path, **opts):
    """The model at @path from the process registry, loading it if no caller
    has it: keywords id, n_ctx, slots, threads, keep_alive_ms, queue."""
    return _get_or_load(Model, path, **opts)


def torch_to_buffer(tensor):
    """A TensorBuffer over a (CPU) PyTorch tensor's memory, without copying.
    A bool tensor goes through DLPack as uint8 (DLPack 0.6 has no bool)."""
    import torch
    if tensor.dtype == torch.bool:
        return TensorBuffer.from_dlpack(tensor.view(torch.uint8))._as_bool(True)
    return TensorBuffer.from_dlpack(tensor)


def buffer_to_torch(buf):
    """A PyTorch tensor over a TensorBuffer's memory, without copying."""
    import torch
    import torch.utils.dlpack
    if buf.dtype == "BOOL":
        return torch.utils.dlpack.from_dlpack(buf._as_bool(False)).view(torch.bool)
    return torch.utils.dlpack.from_dlpack(buf)
