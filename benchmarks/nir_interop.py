"""Benchmark ``nir_interop``: for each NIR fixture graph (snnTorch, Norse, Sinabs, SpikingJelly,
Lava, the NIR paper's Braille RNN; ``tests/spiking/fixtures/nir``), agreement of Ganglion's
``import-nir --like <framework>`` with the framework's own simulation, beside NIR's plain rules
(``--like nir``). Spikes agree when equal; a membrane read-out agrees within 1e-5. Goal: ≥ 99.9 %
on every graph under its preset.

    python benchmarks/nir_interop.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ganglion.converters.nir_program import import_nir_program
from ganglion.converters.nir_semantics import semantics_for
from ganglion.models.errors import NIRError

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "spiking" / "fixtures" / "nir"
GOAL = 0.999
UNTYPED = ("norse", "sinabs")  # their exporters declare the Input with a batch/time axis


def agreement(name: str, like: str, source_like: str) -> float | None:
    """Fraction of output elements equal to the framework's (None: the import is refused)."""
    data = np.load(FIXTURES / f"{name}.npz", allow_pickle=False)
    try:
        program = import_nir_program(
            FIXTURES / f"{name}.nir",
            semantics=semantics_for(like),
            type_check=source_like not in UNTYPED,
        )
    except NIRError:
        return None
    with torch.no_grad():
        got = program.module.run(torch.from_numpy(data["x"])).numpy()
    return float(np.isclose(got, data["y"], atol=1e-5, rtol=0).mean())


def main() -> None:
    """Print one JSON line per fixture graph, then a table."""
    rows = []
    for npz in sorted(FIXTURES.glob("*.npz")):
        like = str(np.load(npz, allow_pickle=False)["like"])
        preset, plain = agreement(npz.stem, like, like), agreement(npz.stem, "nir", like)
        row = {"graph": npz.stem, "like": like, "agreement": preset, "plain_nir_rules": plain,
               "goal_met": preset is not None and preset >= GOAL}  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    fmt = lambda v: "refused" if v is None else f"{100 * v:.2f} %"  # noqa: E731
    print(f"\n{'graph':34} {'--like':13} {'agreement':>10} {'plain nir':>10}  goal")
    for r in rows:
        goal = "met" if r["goal_met"] else "MISSED"
        print(f"{r['graph']:34} {r['like']:13} {fmt(r['agreement']):>10} "
              f"{fmt(r['plain_nir_rules']):>10}  {goal}")  # fmt: skip


if __name__ == "__main__":
    main()
