"""Launch shapes of the time-scan kernels (LIF, WKV), and the rule that picks one per size.

A scan kernel gives each program ``block`` independent lanes (neurons or channels) and walks
time in tiles of ``depth`` steps: the next tile's loads are issued before the current tile is
computed, so up to ``2 * depth`` steps of input are in flight per lane. Without that, each lane
has one load outstanding and a large GPU idles on memory latency.
"""

from dataclasses import dataclass

import torch
import triton

# At least this many programs per streaming multiprocessor before a larger block is taken.
MIN_PROGRAMS_PER_SM = 4


@dataclass(frozen=True)
class Launch:
    """One launch shape: lanes per program, steps per time tile, and warps per program."""

    block: int
    depth: int
    num_warps: int

    def __post_init__(self) -> None:
        for name in ("block", "depth", "num_warps"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"expected {name} a power of two >= 1, got {value}")


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (the Triton interpreter)."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def warps_for(block: int, element_size: int) -> int:
    """Warps that lay a tile's ``block`` lanes across whole warps (16-byte loads, 32 threads),
    so that each thread holds whole columns of the tile; between 1 and 8."""
    return min(max(block * element_size // (16 * 32), 1), 8)


def pick_block(lanes: int, device: torch.device, blocks: tuple[int, ...]) -> int:
    """The largest of ``blocks`` that still gives ``MIN_PROGRAMS_PER_SM`` programs per
    multiprocessor for ``lanes`` lanes (the smallest block when none does)."""
    wanted = MIN_PROGRAMS_PER_SM * multiprocessors(device)
    fitting = [b for b in sorted(blocks) if triton.cdiv(lanes, b) >= wanted]
    return fitting[-1] if fitting else min(blocks)
