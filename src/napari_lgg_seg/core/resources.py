"""Memory checks made before large allocations, so that a run that cannot fit stops
with a clear message instead of being killed by the operating system."""

from __future__ import annotations

import os

from .errors import InputError

# TensorFlow, the model and Python itself need room beside the arrays we allocate
HEADROOM_BYTES = 512 * 2**20


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``, or free
    physical pages elsewhere); None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(needed_bytes: int, what: str, hint: str = "") -> None:
    """Raise InputError when ``needed_bytes`` plus ``HEADROOM_BYTES`` exceed the available memory.

    ``what`` says what needs the memory (with the file or option), ``hint`` what to do.
    """
    free = available_memory()
    needed = needed_bytes + HEADROOM_BYTES
    if free is None or needed <= free:
        return
    tail = f"; {hint}" if hint else ""
    raise InputError(f"{what} needs about {gib(needed)} of memory but only {gib(free)} is available{tail}")


def segment_bytes(shape: tuple[int, ...], itemsize: int, batch_size: int, base_filters: int = 16,
                  size: tuple[int, int] = (256, 256)) -> int:
    """Memory that segmenting a volume of ``shape`` (already read) needs: float32
    probabilities and uint8 labels of the whole volume, plus one batch (at most the slice
    count) of model input and U-Net activations: 12 float32 maps of ``base_filters``
    channels at full resolution per slice, twice the 6.2 measured for the bundled U-Net
    (batch 32, CPU)."""
    z, y, x = shape[0], shape[1], shape[2]
    volume = z * y * x
    batch = min(batch_size, z)
    per_slice = size[0] * size[1] * (3 * 4 + 12 * base_filters * 4)
    return volume * (4 + 1 + 2) + batch * per_slice + batch * y * x * 4 * (shape[3] if len(shape) > 3 else 1)
