"""Accelerator memory: the out-of-memory error type, freeing cached blocks, allocated bytes."""

from __future__ import annotations

import gc


def oom_errors() -> tuple[type[BaseException], ...]:
    """What torch raises when the device runs out of memory (nothing without torch)."""
    try:
        import torch
    except ImportError:
        return ()
    return (torch.OutOfMemoryError,)


def free_memory() -> None:
    """Collect garbage and hand CUDA's cached blocks back."""
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cuda_allocated(device: str) -> int:
    """Bytes torch has allocated on `device` (0 when it is not a CUDA device)."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.memory_allocated(torch.device(device)))
