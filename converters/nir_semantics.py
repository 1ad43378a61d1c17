"""How an NIR graph's continuous-time neurons become discrete steps: the conventions each
framework fills in where NIR leaves them open (``ganglion import-nir --like``).

Each field is one knob of ``import-nir`` (README, "Discrete time and NIR", has the table):
  dt              seconds per step: IF/I gain = dt·R, and LIF-type decay unless dt_leaky is set
  dt_leaky        the step used for the τ of LIF, LI, CubaLIF, CubaLI (Norse 1.1.0 writes those
                  τ a factor 1/dt too small, τ = dt·τ_mem, so they need dt² = 1e-6)
  decay           "euler": decay = 1 − dt/τ, input gain dt·R/τ; "exact": decay = exp(−dt/τ),
                  input gain (1 − decay)·R (zero-order hold)
  reset           "zero" (to v_reset) or "subtract" (the threshold)
  reset_delay     1: a spike's reset lands one step late (snnTorch's default)
  fire            "gt": spike when v > threshold; "ge": when v ≥ threshold
  v_init          the membrane at t = 0: "zero", "leak" (v_leak) or "reset" (v_reset)
  spikes_per_step "one", or "many": ⌊v/threshold⌋ spikes in one step (Sinabs' MultiSpike)
  synaptic_delay  1: every weighted connection delivers one step late (Lava, Spyx)
  lower_bound     "none", or "threshold": IF membranes bounded below at −threshold (Sinabs)
  synaptic_input  CubaLIF/CubaLI input: "euler" (gain dt·w_in/τ_syn) or "jump" (gain w_in:
                  each input adds to the current at once, Norse's i ← i + x)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ganglion.models.errors import NIRError
from ganglion.models.manifest import DEFAULT_DT, SEMANTICS


@dataclass(frozen=True)
class NirSemantics:
    """One set of simulation conventions (module docstring); ``like`` names its preset."""

    like: str = "nir"
    dt: float = DEFAULT_DT
    dt_leaky: float | None = None
    decay: str = "euler"
    reset: str = "zero"
    reset_delay: int = 0
    fire: str = "gt"
    v_init: str = "zero"
    spikes_per_step: str = "one"
    synaptic_delay: int = 0
    lower_bound: str = "none"
    synaptic_input: str = "euler"

    def __post_init__(self) -> None:
        for name in ("dt", "dt_leaky"):
            value = getattr(self, name)
            if value is None and name == "dt_leaky":
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value > 0):
                flag = "--dt" if name == "dt" else "dt_leaky"
                raise NIRError(f"{flag} must be a positive finite number of seconds, got {value!r}")
        for name, choices in SEMANTICS.items():
            if "seconds" not in choices and getattr(self, name) not in choices:
                raise NIRError(
                    f"{name} must be one of {', '.join(map(str, choices))}, "
                    f"got {getattr(self, name)!r}"
                )

    def leaky_dt(self) -> float:
        """The step used for the time constants of LIF, LI, CubaLIF and CubaLI."""
        return self.dt_leaky if self.dt_leaky is not None else self.dt

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the manifest's ``time.semantics``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NirSemantics:
        """Parse ``to_dict`` output; an unknown key is an NIRError naming it."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise NIRError(f"unknown simulation convention(s) {unknown}")
        return cls(**data)


PRESETS: dict[str, NirSemantics] = {
    "nir": NirSemantics(),
    "snntorch": NirSemantics(like="snntorch", reset="subtract", reset_delay=1),
    "norse": NirSemantics(
        like="norse", dt=1.0, dt_leaky=1e-6, v_init="leak", synaptic_input="jump"
    ),
    "sinabs": NirSemantics(
        like="sinabs",
        dt=1.0,
        decay="exact",
        reset="subtract",
        fire="ge",
        spikes_per_step="many",
        lower_bound="threshold",
    ),
    "spikingjelly": NirSemantics(like="spikingjelly", fire="ge", v_init="reset"),
    "lava": NirSemantics(like="lava", synaptic_delay=1),
}


def semantics_for(like: str = "nir", **overrides: Any) -> NirSemantics:
    """The preset ``like`` with the knobs given (not None) replacing its values."""
    if like not in PRESETS:
        raise NIRError(f"--like must be one of {', '.join(PRESETS)}, got {like!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(PRESETS[like], **given)
