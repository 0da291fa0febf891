"""SharedMemoryRegion: a POSIX shared-memory object mapped in this process,
which a local inferd worker can read and write in place (the KServe system
shared-memory extension), with NumPy, PyTorch and TensorBuffer views on it
(no copies)."""
import mmap
import os
import secrets

__all__ = ["SharedMemoryRegion"]

_SHM_DIR = "/dev/shm"


def _path(key):
    if not key.startswith("/") or "/" in key[1:] or len(key) < 2:
        raise ValueError(f"shared-memory key {key!r}: expected '/NAME' (no other '/')")
    return _SHM_DIR + key


class SharedMemoryRegion:
    """A mapping of a POSIX shared-memory object ("/NAME" under /dev/shm).

    SharedMemoryRegion.create(size) makes a new object (mode 0600, its bytes
    reserved at once so that a full /dev/shm is an error here, not a fault
    later); SharedMemoryRegion.attach(key) maps an existing one (one a worker
    created for us: its key comes from the create route). register(client,
    name) registers it with a worker, unregister(client) forgets it there;
    close() unmaps it, and unlinks the object if this process made it.
    """

    def __init__(self, key, size, mm, owner):
        import numpy as np
        self.key = key
        self.size = size
        self._mm = mm
        self._owner = owner
        self._registered = []  # (client, name)
        self.base = int(np.frombuffer(mm, np.uint8, count=1).ctypes.data)  # its address here

    @classmethod
    def create(cls, size, key=None):
        if size <= 0:
            raise ValueError("size: expected > 0 bytes")
        key = key or f"/inferd-py-{os.getpid()}-{secrets.token_hex(8)}"
        fd = os.open(_path(key), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError:
                os.unlink(_path(key))
                raise
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(key, size, mm, True)

    @classmethod
    def attach(cls, key, size=None):
        fd = os.open(_path(key), os.O_RDWR)
        try:
            have = os.fstat(fd).st_size
            size = have if size is None else size
            if size <= 0 or size > have:
                raise ValueError(f"attach {key}: {size} bytes asked, the object has {have}")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(key, size, mm, False)

    def _check(self, nbytes, offset):
        if self._mm is None:
            raise ValueError("the region is closed")
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise ValueError(f"bytes [{offset}, {offset + nbytes}) are outside the region's "
                             f"{self.size}")

    def numpy(self, dtype, shape, offset=0):
        """A NumPy array over the region's bytes at @offset (no copy)."""
        import numpy as np
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        self._check(n * dt.itemsize, offset)
        return np.frombuffer(self._mm, dtype=dt, count=n, offset=offset).reshape(shape)

    def torch(self, dtype, shape, offset=0):
        """A PyTorch tensor over the region's bytes at @offset (no copy)."""
        import torch
        n = 1
        for d in shape:
            n *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        self._check(n * itemsize, offset)
        return torch.frombuffer(self._mm, dtype=dtype, count=n, offset=offset).reshape(shape)

    def buffer(self, dtype, shape, offset=0):
        """A TensorBuffer over the region's bytes at @offset (no copy)."""
        from ._inferd import TensorBuffer
        return TensorBuffer.from_numpy(self.numpy(dtype, shape, offset))

    def register(self, client, name, offset=0, size=None):
        """Register the region (or its window @offset, @size) with the worker
        of @client (a ModelWorkerClient, connected) as @name."""
        size = self.size - offset if size is None else size
        self._check(size, offset)
        client._client().register(name, self.key, offset, size)
        self._registered.append((client, name))
        client._regions.append((self, name, offset, size))

    def unregister(self, client, name=None):
        """Forget the region at @client's worker: @name, or every name it was
        registered under through register()."""
        names = [name] if name is not None else [n for _, n in self._registered]
        for n in names:
            client._client().unregister(n)
        client._regions = [t for t in client._regions if not (t[0] is self and t[1] in names)]
        self._registered = [(c, n) for c, n in self._registered if n not in names]

    def close(self):
        """Unmap (views made from it must be gone first); unlink the object if
        this process made it."""
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._owner:
            self._owner = False
            try:
                os.unlink(_path(self.key))
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
