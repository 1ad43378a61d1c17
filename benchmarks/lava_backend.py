"""Benchmark ``lava_backend``: samples/s of Lava fixed_pt vs our fixed-point torch program.

The same quantized digits MLP (T=32, direct encoding), the same test samples, one run; prints a
JSON line, a table and the ratio, and checks the two agree exactly. What the ratio shows: how
much time the torch predictor saves over Lava's simulator for bit-identical outputs.

    python benchmarks/lava_backend.py [--samples 64] [--timesteps 32]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.runtime.demo import train_network
from ganglion.runtime.session import load


def _samples_per_second(program, backend: str, x: np.ndarray) -> tuple[float, np.ndarray]:
    with load(program, backend=backend) as session:
        session.run(x[:1])  # warm-up: Lava compiles and starts its processes here
        start = time.perf_counter()
        out = session.run(x)
        return x.shape[0] / (time.perf_counter() - start), out


def main() -> None:
    """Run the comparison and print JSON, a table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--timesteps", type=int, default=32)
    args = parser.parse_args()
    model, data = train_network("mlp")
    program = convert_spiking(
        model, data.x_train, data.y_train, SpikingOptions(timesteps=args.timesteps)
    )
    quantized = quantize_loihi2(program, data.x_train, data.y_train)
    x, y = data.x_test[: args.samples], data.y_test[: args.samples]
    torch_rate, torch_out = _samples_per_second(quantized, "torch", x)
    lava_rate, lava_out = _samples_per_second(quantized, "lava", x)
    result = {
        "benchmark": "lava_backend",
        "network": "digits_mlp",
        "timesteps": args.timesteps,
        "samples": int(x.shape[0]),
        "torch_fixed_samples_per_s": torch_rate,
        "lava_fixed_pt_samples_per_s": lava_rate,
        "ratio_torch_over_lava": torch_rate / lava_rate,
        "identical_outputs": bool(np.array_equal(torch_out, lava_out)),
        "lava_accuracy": float((lava_out.argmax(-1) == y).mean()),
    }
    print(json.dumps(result))
    print(f"{'backend':<28}{'samples/s':>12}")
    print(f"{'torch (fixed-point program)':<28}{torch_rate:>12.1f}")
    print(f"{'lava fixed_pt (Loihi2SimCfg)':<28}{lava_rate:>12.2f}")
    print(
        f"ratio torch / lava: {result['ratio_torch_over_lava']:.0f}x; "
        f"identical outputs: {result['identical_outputs']}"
    )


if __name__ == "__main__":
    main()
