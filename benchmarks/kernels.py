"""Benchmark Ganglion's Triton kernels against their PyTorch references (and fla for GLA).

On an NVIDIA GPU: for each kernel and size, the kernel's time, the bytes it must move at
minimum divided by that time, that bandwidth as a fraction of the GPU's peak, and speed-ups
over the PyTorch reference (eager, and ``torch.compile`` of its per-step function), over
fla's ``chunk_gla`` / ``fused_recurrent_gla`` when ``fla`` is importable, and for the chunked
WKV kernel over the token-by-token one (``speedup_vs_scan_kernel``). One JSON line per row,
then a table. Without CUDA it exits 0 saying it needs a GPU.

``--interpret-smoke`` runs tiny sizes on CPU under ``TRITON_INTERPRET=1`` and checks each
kernel against its reference: it proves the script works and reports no timings.

Usage: ``python benchmarks/kernels.py [--ops lif,lif_fixed,wkv,gla] [--ref-max-t 1024]``
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

# Peak DRAM bandwidth in GB/s, from NVIDIA's product datasheets; matched in order against
# torch.cuda.get_device_name(), so more specific names come first.
PEAK_GBPS = [
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5 (device name "NVIDIA H100 80GB HBM3")
    ("GH200", 4000.0),
    ("H200", 4800.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40 GB SXM4 and PCIe
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
    ("T4", 320.0),
    ("Orin", 204.8),  # Jetson AGX Orin 64GB
]
PEAK_SOURCE = "NVIDIA datasheets"


@dataclass
class Case:
    """One benchmark row: the kernel, its baselines and the minimum bytes it moves."""

    op: str
    size: str
    nbytes: int
    kernel: Callable[[], object]
    baselines: dict[str, Callable[[], object]] = field(default_factory=dict)
    check: Callable[[], float] | None = None


def peak_gbps(name: str) -> float | None:
    """Peak memory bandwidth of the named GPU in GB/s, or ``None`` when not in the table."""
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def announce_gpu() -> tuple[str, float | None]:
    """Print and return this GPU's name and its peak bandwidth (GB/s, ``None`` if unknown)."""
    gpu = torch.cuda.get_device_name()
    peak = peak_gbps(gpu)
    print(f"# GPU: {gpu}; peak bandwidth {peak} GB/s ({PEAK_SOURCE})", flush=True)
    return gpu, peak


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _loop(step: Callable, xs: list, state):
    for x in xs:
        state = step(x, state)
    return state


def lif_cases(device: str, sizes: list[tuple[int, int, int]], ref_max_t: int) -> list[Case]:
    """Float LIF rows: sizes are ``(T, B, N)``, fp16 input current."""
    from ganglion.kernels.lif.reference import lif_scan_reference
    from ganglion.kernels.lif.triton import lif_scan_triton

    cases = []
    for t, b, n in sizes:
        current = torch.randn(t, b, n, device=device, dtype=torch.float16)
        v0 = torch.zeros(b, n, device=device)
        p = [torch.rand(n, device=device) for _ in range(4)]
        args = (current, v0, *p)

        def step(x, v, p=p):
            v = p[0] * v + p[2] + x.float()
            s = v > p[1]
            return v - s.float() * p[1]

        nbytes = _nbytes(current, current, v0, v0)
        case = Case("lif", f"T{t}-B{b}-N{n}-fp16", nbytes, lambda a=args: lif_scan_triton(*a))
        if t <= ref_max_t:
            compiled = torch.compile(step)
            case.baselines["torch"] = lambda a=args: lif_scan_reference(*a)
            case.baselines["compile"] = lambda c=compiled, a=args: _loop(c, list(a[0]), a[1])

        def check(a=args) -> float:
            s_ref, v_ref = lif_scan_reference(*a)
            s, v = lif_scan_triton(*a)
            return max(
                (s.float() - s_ref.float()).abs().max().item(), (v - v_ref).abs().max().item()
            )

        case.check = check if t <= ref_max_t else None
        cases.append(case)
    return cases


def lif_fixed_cases(device: str, sizes: list[tuple[int, int, int]], ref_max_t: int) -> list[Case]:
    """Loihi fixed-point LIF rows: sizes are ``(T, B, N)``, int32 input."""
    from ganglion.kernels.lif.reference import lif_fixed_scan_reference
    from ganglion.kernels.lif.triton import lif_fixed_scan_triton

    cases = []
    for t, b, n in sizes:
        a_in = torch.randint(-512, 512, (t, b, n), device=device, dtype=torch.int32)
        u0 = torch.zeros(b, n, device=device, dtype=torch.int32)
        p = [torch.randint(0, 4096, (n,), device=device) for _ in range(2)]
        p += [torch.zeros(n, device=device, dtype=torch.int64)] * 2
        p += [torch.randint(100, 1000, (n,), device=device)]
        args = (a_in, u0, u0, *p)
        nbytes = _nbytes(a_in, a_in, u0, u0, u0, u0)
        case = Case(
            "lif_fixed", f"T{t}-B{b}-N{n}", nbytes, lambda a=args: lif_fixed_scan_triton(*a)
        )
        if t <= ref_max_t:
            case.baselines["torch"] = lambda a=args: lif_fixed_scan_reference(*a)

        def check(a=args) -> float:
            return float(any(not torch.equal(x, y) for x, y in zip(
                lif_fixed_scan_reference(*a), lif_fixed_scan_triton(*a), strict=True)))  # fmt: skip

        case.check = check if t <= ref_max_t else None
        cases.append(case)
    return cases


def wkv_cases(device: str, sizes: list[tuple[int, int, int]], ref_max_t: int) -> list[Case]:
    """WKV rows: sizes are ``(B, T, C)``, fp32. Per size, the token-by-token kernel (``wkv``)
    and the chunked one (``wkv_chunk``, with its speed-up over the former)."""
    from ganglion.kernels.wkv.reference import (
        wkv_chunk_reference,
        wkv_initial_state,
        wkv_scan_reference,
        wkv_step_reference,
    )
    from ganglion.kernels.wkv.triton import wkv_scan_triton
    from ganglion.kernels.wkv.triton_chunk import wkv_chunk_triton

    def max_error(kernel: Callable, a: tuple) -> float:
        return (wkv_scan_reference(*a)[0] - kernel(*a)[0]).abs().max().item()

    cases = []
    for b, t, c in sizes:
        w, u = -torch.rand(c, device=device), torch.randn(c, device=device)
        k, v = (torch.randn(b, t, c, device=device) for _ in range(2))
        args = (w, u, k, v)
        nbytes = _nbytes(k, v, v) + 6 * b * c * 4
        size = f"B{b}-T{t}-C{c}-fp32"
        scan = Case("wkv", size, nbytes, lambda a=args: wkv_scan_triton(*a))
        chunk = Case("wkv_chunk", size, nbytes, lambda a=args: wkv_chunk_triton(*a))
        chunk.baselines["scan_kernel"] = scan.kernel
        if t <= ref_max_t:
            compiled = torch.compile(wkv_step_reference)
            state = wkv_initial_state(b, c, device)

            def run_compiled(a=args, s=state, c=compiled):
                for i in range(a[2].shape[1]):
                    _, s = c(a[0], a[1], a[2][:, i], a[3][:, i], s)

            scan.baselines["torch"] = lambda a=args: wkv_scan_reference(*a)
            scan.baselines["compile"] = run_compiled
            chunk.baselines["torch_chunk"] = lambda a=args: wkv_chunk_reference(*a)
            scan.check = partial(max_error, wkv_scan_triton, args)
            chunk.check = partial(max_error, wkv_chunk_triton, args)
        cases += [scan, chunk]
    return cases


def gla_inputs(
    size: tuple[int, int, int, int, int], device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """``(q, k, v, g)`` of GLA at ``size = (B, T, H, K, V)``: normal q, k, v and GLA's gate
    ``logsigmoid(.) / 16`` (computed in fp32), all in ``dtype``."""
    b, t, h, dk, dv = size
    q, k, g = (torch.randn(b, t, h, dk, device=device, dtype=dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(g.float()).div(16).to(dtype)
    v = torch.randn(b, t, h, dv, device=device, dtype=dtype)
    return q, k, v, g


def gla_cases(
    device: str, sizes: list[tuple[int, int, int, int, int]], ref_max_t: int, chunk: int
) -> list[Case]:
    """GLA rows: sizes are ``(B, T, H, K, V)``; ``T < chunk`` benchmarks the recurrent kernel."""
    from ganglion.kernels.gla.reference import gla_recurrent_reference
    from ganglion.kernels.gla.triton import chunk_gla_triton, fused_recurrent_gla_triton

    try:
        from fla.ops.gla import chunk_gla, fused_recurrent_gla
    except ImportError:
        chunk_gla = fused_recurrent_gla = None
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cases = []
    for b, t, h, dk, dv in sizes:
        args = q, k, v, g = gla_inputs((b, t, h, dk, dv), device, dtype)
        nbytes = _nbytes(q, k, g, v, v)
        size = f"B{b}-T{t}-H{h}-K{dk}-V{dv}-{str(dtype).removeprefix('torch.')}"
        if t < chunk:
            op, ours, theirs = "gla_recurrent", fused_recurrent_gla_triton, fused_recurrent_gla
        else:
            op, ours, theirs = "gla_chunk", partial(chunk_gla_triton, chunk_size=chunk), chunk_gla
        case = Case(op, size, nbytes, lambda a=args, f=ours: f(*a))
        if theirs is not None:
            case.baselines["fla"] = lambda a=args, f=theirs: f(*a)
        if t <= ref_max_t:
            case.baselines["torch"] = lambda a=args: gla_recurrent_reference(*a)

        def check(a=args, f=ours) -> float:
            ref = gla_recurrent_reference(*(x.float() for x in a))[0]
            return (f(*a)[0].float() - ref).abs().max().item()

        case.check = check if t <= ref_max_t else None
        cases.append(case)
    return cases


OPS = ("lif", "lif_fixed", "wkv", "gla")


def ops_list(text: str, known: tuple[str, ...] = OPS) -> list[str]:
    """``--ops`` value: comma-separated names from ``known`` (argparse type)."""
    ops = [op for op in text.split(",") if op]
    unknown = [op for op in ops if op not in known]
    if unknown or not ops:
        raise argparse.ArgumentTypeError(f"expected ops from {', '.join(known)}, got {text!r}")
    return ops


def build_cases(ops: list[str], device: str, ref_max_t: int, smoke: bool) -> list[Case]:
    """The benchmark grid: edge sizes (batch 1-16) and prefill (T = 1K-16K); tiny if ``smoke``."""
    if smoke:
        grids = {
            "lif": [(4, 2, 37)],
            "lif_fixed": [(4, 2, 37)],
            "wkv": [(2, 5, 33), (1, 300, 8)],  # the second cuts the chunk kernel into segments
            "gla": [(1, 20, 2, 16, 16), (2, 3, 1, 16, 8)],
        }
    else:
        grids = {
            "lif": [(16, 1, 4096), (16, 16, 4096), (1024, 1, 65536), (1024, 16, 16384),
                    (4096, 16, 16384)],
            "lif_fixed": [(16, 16, 4096), (1024, 16, 16384)],
            "wkv": [(1, 1024, 768), (16, 1024, 768), (1, 16384, 2048), (16, 4096, 2048)],
            "gla": [(1, 1, 8, 64, 128), (16, 1, 8, 64, 128), (1, 1024, 8, 64, 128),
                    (1, 4096, 8, 64, 128), (1, 16384, 8, 64, 128), (16, 4096, 8, 64, 128)],
        }  # fmt: skip
    builders = {
        "lif": lambda s: lif_cases(device, s, ref_max_t),
        "lif_fixed": lambda s: lif_fixed_cases(device, s, ref_max_t),
        "wkv": lambda s: wkv_cases(device, s, ref_max_t),
        "gla": lambda s: gla_cases(device, s, ref_max_t, chunk=16 if smoke else 64),
    }
    return [case for op in ops for case in builders[op](grids[op])]


def measure(case: Case, gpu: str, peak: float | None) -> dict:
    """Time the kernel and its baselines with ``triton.testing.do_bench`` (ms, median)."""
    from triton.testing import do_bench

    ms = do_bench(case.kernel, warmup=25, rep=100, return_mode="median")
    gbps = case.nbytes / ms / 1e6
    row = {"gpu": gpu, "op": case.op, "size": case.size, "ms": ms, "GB/s": gbps}
    row["peak_frac"] = gbps / peak if peak else None
    row["max_abs_err"] = case.check() if case.check else None
    for name, fn in case.baselines.items():
        base = do_bench(fn, warmup=1, rep=20, return_mode="median")
        row[f"{name}_ms"] = base
        row[f"speedup_vs_{name}"] = base / ms
    return row


def profile_gla(sizes: list[tuple[int, int, int, int, int]]) -> None:
    """Per-kernel CUDA time of one chunked GLA call, ours and fla's (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from ganglion.kernels.gla.triton import chunk_gla_triton

    impls = {"ganglion": chunk_gla_triton}
    try:
        from fla.ops.gla import chunk_gla

        impls["fla"] = chunk_gla
    except ImportError:
        pass
    for b, t, h, dk, dv in sizes:
        args = gla_inputs((b, t, h, dk, dv), "cuda", torch.bfloat16)
        for name, fn in impls.items():
            fn(*args)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn(*args)
                torch.cuda.synchronize()
            print(f"# profile {name} B{b}-T{t}-H{h}-K{dk}-V{dv}: CUDA time per call, by kernel")
            for event in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:6]:
                us = event.device_time_total / 5
                print(f"#   {event.key[:60]:60s} {us:9.1f} us")


def print_table(rows: list[dict]) -> None:
    """A readable table of the rows (missing entries shown as ``-``)."""
    cols = sorted({k for r in rows for k in r} - {"gpu", "op", "size"}, key=_col_order)
    cols = ["op", "size", *cols]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _col_order(col: str) -> tuple[int, str]:
    order = ["ms", "GB/s", "peak_frac", "max_abs_err"]
    return (order.index(col), col) if col in order else (len(order), col)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=ops_list, default=list(OPS))
    parser.add_argument(
        "--ref-max-t", type=int, default=1024,
        help="run the step-by-step PyTorch references (timing and error check) up to this T",
    )  # fmt: skip
    parser.add_argument(
        "--interpret-smoke", action="store_true",
        help="tiny sizes on CPU under TRITON_INTERPRET=1; error checks only, no timings",
    )  # fmt: skip
    parser.add_argument(
        "--profile-gla", action="store_true",
        help="also print the per-kernel CUDA time of chunked GLA (ours and fla's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ops = args.ops
    if args.interpret_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel modules are imported
        rows = []
        for case in build_cases(ops, "cpu", args.ref_max_t, smoke=True):
            row = {"gpu": None, "device": "cpu (Triton interpreter)", "op": case.op}
            row.update(size=case.size, max_abs_err=case.check() if case.check else None)
            rows.append(row)
            print(json.dumps(row))
        print_table(rows)
        print("interpret smoke: kernels ran under the Triton interpreter; no timings reported")
        return 0
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs an NVIDIA GPU (CUDA not available); nothing measured")
        return 0
    gpu, peak = announce_gpu()
    rows = []
    for case in build_cases(ops, "cuda", args.ref_max_t, smoke=False):
        row = measure(case, gpu, peak)
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    print_table(rows)
    if args.profile_gla:
        profile_gla([(1, 16384, 8, 64, 128), (16, 4096, 8, 64, 128)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
