"""inferd from Python.

TensorBuffer: tensor memory shared with NumPy and PyTorch without copies
(the buffer protocol, __array_interface__, DLPack 0.6).
"""
from ._inferd import TensorBuffer

__all__ = ["TensorBuffer", "buffer_to_torch", "torch_to_buffer"]


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
