"""Sweep the launch shapes of the time-scan kernels (LIF, Loihi LIF, WKV) and of chunked GLA's
inter-chunk pass on this GPU.

For each size and each ``Launch(block, depth, num_warps)``: the kernel's median time, the
minimum bytes it must move divided by that time, that as a fraction of the GPU's peak, and
the largest difference of its output from the default launch's (0: bit for bit). The row
marked ``default`` is the shape ``default_launch`` (for GLA, ``default_state_launch``) picks;
a user on another GPU (a Jetson, say) reruns this to see whether the rule suits it. One JSON line
per row, then a table.

Usage: ``python benchmarks/kernel_tuning.py [--ops lif,lif_fixed,wkv,gla]`` (needs CUDA).
"""

import argparse
import itertools
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ganglion.kernels.launch import Launch, warps_for  # noqa: E402
from kernels import announce_gpu, gla_inputs, ops_list, print_table  # noqa: E402

DEPTHS = (2, 4, 8, 16)


def _launches(blocks: tuple[int, ...], element_size: int) -> list[Launch]:
    shapes = []
    for block, depth in itertools.product(blocks, DEPTHS):
        warps = warps_for(block, element_size)
        shapes += [Launch(block, depth, w) for w in sorted({warps, min(2 * warps, 8)})]
    return shapes


def lif_runs(size: tuple[int, int, int]):
    """(name, bytes, run(launch), default launch, launches) for float LIF at ``(T, B, N)``."""
    from ganglion.kernels.lif.triton import default_launch, lif_scan_triton

    t, b, n = size
    current = torch.randn(t, b, n, device="cuda", dtype=torch.float16)
    v0 = torch.zeros(b, n, device="cuda")
    params = [torch.rand(n, device="cuda") for _ in range(4)]
    nbytes = 2 * current.numel() * 2 + 2 * v0.numel() * 4

    def run(launch: Launch):
        return lif_scan_triton(current, v0, *params, launch=launch)

    default = default_launch(b * n, 2, current.device)
    return f"lif T{t}-B{b}-N{n}-fp16", nbytes, run, default, _launches((256, 512, 1024), 2)


def lif_fixed_runs(size: tuple[int, int, int]):
    """As ``lif_runs`` for the Loihi 2 fixed-point LIF (int32 input)."""
    from ganglion.kernels.lif.triton import FIXED_DEPTH, default_launch, lif_fixed_scan_triton

    t, b, n = size
    a_in = torch.randint(-512, 512, (t, b, n), device="cuda", dtype=torch.int32)
    u0 = torch.zeros(b, n, device="cuda", dtype=torch.int32)
    du, dv = (torch.randint(0, 4096, (n,), device="cuda") for _ in range(2))
    zeros = torch.zeros(n, device="cuda", dtype=torch.int64)
    vth = torch.randint(100, 1000, (n,), device="cuda")
    nbytes = 2 * a_in.numel() * 4 + 4 * u0.numel() * 4

    def run(launch: Launch):
        return lif_fixed_scan_triton(a_in, u0, u0, du, dv, zeros, zeros, vth, launch=launch)

    default = default_launch(b * n, 4, a_in.device, FIXED_DEPTH)
    return f"lif_fixed T{t}-B{b}-N{n}", nbytes, run, default, _launches((256, 512, 1024), 4)


def wkv_runs(size: tuple[int, int, int]):
    """As ``lif_runs`` for WKV at ``(B, T, C)``, fp32."""
    from ganglion.kernels.wkv.triton import default_launch, wkv_scan_triton

    b, t, c = size
    w, u = -torch.rand(c, device="cuda"), torch.randn(c, device="cuda")
    k, v = (torch.randn(b, t, c, device="cuda") for _ in range(2))
    nbytes = 3 * k.numel() * 4 + 6 * b * c * 4

    def run(launch: Launch):
        return wkv_scan_triton(w, u, k, v, launch=launch)

    default = default_launch(b, c, 4, k.device)
    return f"wkv B{b}-T{t}-C{c}-fp32", nbytes, run, default, _launches((64, 128, 256), 4)


def gla_runs(size: tuple[int, int, int, int, int]):
    """As ``lif_runs`` for chunked GLA at ``(B, T, H, K, V)``, bf16, chunk 64: the launches are
    the inter-chunk pass's ``StateLaunch(bk, bv, segments)``; the time is the whole call's."""
    from ganglion.kernels.gla.triton import StateLaunch, chunk_gla_triton, default_state_launch
    from ganglion.kernels.launch import multiprocessors

    b, t, h, dk, dv = size
    q, k, v, g = gla_inputs(size, "cuda", torch.bfloat16)
    nbytes = 2 * (3 * q.numel() + 2 * v.numel())
    chunks = -(-t // 64)

    def run(launch):
        return chunk_gla_triton(q, k, v, g, output_final_state=True, launch=launch)

    default = default_state_launch(b * h, chunks, dk, dv, multiprocessors(q.device))
    segments = [s for s in (1, 2, 4, 8, 16, 32, 64) if s <= chunks]
    launches = [StateLaunch(bk, bv, s) for bk in (32, 64) for bv in (32, 64) for s in segments]
    return f"gla T{t}-B{b}-H{h}-K{dk}-V{dv}-bf16", nbytes, run, default, launches


SIZES = {
    "lif": (lif_runs, [(1024, 1, 65536), (1024, 16, 16384), (4096, 16, 16384)]),
    "lif_fixed": (lif_fixed_runs, [(1024, 16, 16384)]),
    "wkv": (wkv_runs, [(16, 4096, 2048), (1, 16384, 2048), (16, 1024, 768)]),
    "gla": (
        gla_runs,
        [
            (1, 16384, 8, 64, 128),
            (1, 4096, 8, 64, 128),
            (16, 4096, 8, 64, 128),
            (1, 1024, 8, 64, 128),
        ],
    ),
}


def _max_diff(a, b) -> float:
    """Largest absolute difference between two launches' outputs (0.0: bit-identical)."""
    pairs = zip(_flat(a), _flat(b), strict=True)
    return max((x.double() - y.double()).abs().max().item() for x, y in pairs)


def _flat(out) -> list[torch.Tensor]:
    return [t for o in out for t in (o if isinstance(o, tuple) else (o,))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=partial(ops_list, known=tuple(SIZES)), default=list(SIZES))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/kernel_tuning.py needs an NVIDIA GPU (CUDA not available)")
        return 0
    from triton.testing import do_bench

    gpu, peak = announce_gpu()
    rows = []
    for op in args.ops:
        builder, sizes = SIZES[op]
        for size in sizes:
            name, nbytes, run, default, launches = builder(size)
            expected = run(default)
            for launch in [default, *(s for s in launches if s != default)]:
                ms = do_bench(lambda r=run, s=launch: r(s), warmup=10, rep=40)
                shape = str(launch).removeprefix(type(launch).__name__)
                row = {"gpu": gpu, "op": name, "size": shape}
                row |= {"ms": ms, "GB/s": nbytes / ms / 1e6, "default": launch == default}
                row |= {"peak_frac": nbytes / ms / 1e6 / peak if peak else None}
                row["max_diff_vs_default"] = _max_diff(run(launch), expected)
                rows.append(row)
                print(json.dumps(row), flush=True)
            del expected
            torch.cuda.empty_cache()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
