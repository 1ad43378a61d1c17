"""``ganglion inspect``: what a bundle is, how to feed it, and what it is made of.

The default view is read from the verified bundle's files without torch (``describe_program``);
``--operators``, ``--ops`` and ``--target`` rebuild the program.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ganglion.models.manifest import SpikingTime
from ganglion.runtime.bundle import load_bundle, open_bundle
from ganglion.runtime.cli.chip_fit import show_chip_fit
from ganglion.runtime.cli.terminal import PlainConsole, plain, plain_row, printable
from ganglion.runtime.describe import describe, describe_program
from ganglion.runtime.onnx_export import naming


def inspect(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    target: str | None = typer.Option(None, "--target", help="loihi2: chip-fit report instead."),
    chips: int = typer.Option(1, "--chips", help="With --target loihi2: chips available."),
    trusted_keys: Path | None = typer.Option(
        None, "--trusted-keys", help="Check the signature beside the bundle against these keys."
    ),
    ops: bool = typer.Option(
        False, "--ops", help="Token models: operations, spikes and energy per generated token."
    ),
    text: str = typer.Option(
        "The quick brown fox jumps over the lazy dog. def main(): return 0\n",
        "--text",
        help="With --ops: the text spikes are counted on.",
    ),
    operators: bool = typer.Option(
        False,
        "--operators",
        help="Exported dense programs: also the operators their graph calls (loads torch).",
    ),
) -> None:
    """Show kind, named inputs/outputs (and their shape convention), time, layers, members."""
    if target is not None:
        show_chip_fit(load_bundle(bundle), target, chips, as_json, str(bundle))
        return
    if ops:
        _show_ops(load_bundle(bundle), text, as_json)
        return
    from ganglion.runtime.serving.signing import describe_signature

    with open_bundle(bundle) as program:
        info = describe(program.deployable()) if operators else describe_program(program)
    info["signature"] = describe_signature(bundle, trusted_keys)
    if as_json:
        typer.echo(json.dumps(info, indent=1, allow_nan=False))
    else:
        console = PlainConsole(highlight=False, soft_wrap=True)
        _show(console, str(bundle), info, indent="")
        if operators and "operators" not in info:
            console.print(
                f"operators: none listed (--operators lists the graph of a dense program "
                f"exported from torch; this is a {info['kind']} program)",
                markup=False,
            )
        console.print(_signature_line(info["signature"]), markup=False)
    if trusted_keys is not None and "verified_by" not in info["signature"]:
        why = info["signature"].get("error") or "the bundle has no signature"
        line = f"error: {bundle}: does not verify with --trusted-keys: {why}"
        typer.echo(printable(line), err=True)  # the signature's key hint is the file's text
        raise typer.Exit(1)  # asked to verify, and it does not: a script must see that


def _show_ops(deployable: Any, text: str, as_json: bool) -> None:
    from ganglion.runtime.cli.generate import prompt_ids
    from ganglion.runtime.token_ops import token_ops

    ids = prompt_ids(text, "--text")
    if not 1 <= len(ids) <= 100_000:
        raise ValueError("--text must hold 1 to 100,000 bytes")
    report = token_ops(deployable, ids)
    if as_json:
        typer.echo(json.dumps(report, indent=1, allow_nan=False))
        return
    console = PlainConsole(highlight=False)
    console.print(
        f"per generated token ({deployable.manifest.architecture}, counted on "
        f"{report['tokens_counted']} tokens):"
    )
    console.print(
        f"  MACs {report['macs_per_token']:,.0f}; spike-driven accumulates "
        f"{report['spike_driven_accumulates_per_token']:,.1f}"
    )
    if report["layers"]:
        table = Table("spiking layer", "firing rate", "spikes / token", "drives")
        for name, layer in report["layers"].items():
            plain_row(
                table,
                name,
                f"{layer['firing_rate']:.3f}",
                f"{layer['spikes_per_token']:.1f}",
                layer["drives"],
            )
        console.print(table)
    console.print(
        f"  energy (45 nm, simulated): {report['energy_45nm_mj_per_token']:.4g} mJ; "
        f"the same model as an ANN {report['ann_energy_45nm_mj_per_token']:.4g} mJ "
        f"(ANN / SNN {report['ann_over_snn_energy'] or 0:.3f}x)"
    )
    for device, pred in report["devices"].items():
        console.print(
            f"  {device}: {pred['latency_ms']:.3g} ms, {pred['energy_mj']:.3g} mJ "
            f"per token ({pred['kind']})"
        )


def _signature_line(signature: dict[str, Any]) -> str:
    if not signature["signed"]:
        return f"signed: no (no {Path(signature['signature']).name} beside it)"
    line = f"signed: by key {str(signature.get('key_sha256', '?'))[:16]}"
    if "files" in signature:
        line += f" ({len(signature['files'])} files)"
    if "verified_by" in signature:
        line += f", verified by {Path(signature['verified_by']).name}"
    elif "error" in signature:
        line += f", does NOT verify: {signature['error']}"
    return line


def _show(console: Console, title: str, info: dict[str, Any], indent: str) -> None:
    split = info.get("parameter_split")
    detail = "" if not split else " (" + ", ".join(f"{v:,} {k}" for k, v in split.items()) + ")"
    line, name = plain(indent), plain(title)
    name.stylize("bold")
    line.append_text(name)
    line.append_text(
        plain(
            f": {info['kind']} program ({info['architecture']}, {info['numerics']}), "
            f"{info['parameters']:,} parameters{detail}"
        )
    )
    console.print(line)
    for spec in info["inputs"]:
        text = info["shapes"].get(spec["name"], "")
        console.print(f"{indent}input  {spec['name']} {spec['dtype']}: {text}", markup=False)
    for spec in info["outputs"]:
        text = info["shapes"].get(spec["name"], "")
        console.print(f"{indent}output {spec['name']} {spec['dtype']}: {text}", markup=False)
    if info.get("max_batch") is not None:
        console.print(f"{indent}batch  at most {info['max_batch']} (as exported)", markup=False)
    for name, (low, high) in (info.get("value_ranges") or {}).items():
        console.print(f"{indent}values {name} in [{low}, {high}] (table rows)", markup=False)
    for line in _time_lines(info["time"] or {}):
        console.print(f"{indent}{line}", markup=False)
    if info["state"]:
        names = ", ".join(s["name"] for s in info["state"][:6])
        more = f" and {len(info['state']) - 6} more" if len(info["state"]) > 6 else ""
        console.print(f"{indent}state  {len(info['state'])} tensors: {names}{more}", markup=False)
    for line in _onnx_lines(info):
        console.print(f"{indent}{line}", markup=False)
    if info["layers"]:
        table = Table("layer", "type", "shape", "parameters", "inputs")
        for layer in info["layers"]:
            plain_row(
                table,
                layer["name"],
                layer["type"],
                str(layer["shape"]),
                f"{layer['parameters']:,}",
                ", ".join(layer["inputs"]),
            )
        console.print(table)
    if info.get("operators"):
        ops = ", ".join(f"{name} {count}" for name, count in info["operators"].items())
        console.print(f"{indent}operators {ops}", markup=False)
    _show_report(console, info["report"], indent)
    for name, member in info["members"].items():
        _show(console, f"member {name}", member, indent + "  ")
    for name, digest in info["checksums"].items():
        console.print(f"{indent}sha256 {digest}  {name}", markup=False)


def _onnx_lines(info: dict[str, Any]) -> list[str]:
    """How to feed the bundle's ONNX graphs with plain ONNX Runtime (``onnx_export/naming``)."""
    files, lines = info["checksums"], []
    if naming.STEP_FILE in files and info["state"]:
        lines.append(
            f"onnx   {naming.STEP_FILE}: one step; feed the inputs and "
            f"{naming.state_input('<state>')} for each state tensor, get the outputs and "
            f"{naming.state_output('<state>')}; a fresh state is initial_state.safetensors, "
            "repeated along the batch axis where the state's shape (--json) starts with -1"
        )
    elif naming.STEP_FILE in files:
        lines.append(f"onnx   {naming.STEP_FILE}: the whole program, tensors named as above")
    int8 = naming.precision_file("int8")
    if int8 in files:
        lines.append(
            f"onnx   {int8}: the same, quantized (QDQ, per-channel weights); run it with "
            "--precision int8"
        )
    if naming.SEQUENCE_FILE in files and info["kind"] == "spiking":
        lines.append(
            f"onnx   {naming.SEQUENCE_FILE}: the whole run from a fresh state; feed "
            f"'{naming.INPUT}' time-major [time, batch, ...], already encoded (direct: the input "
            "repeated over the timesteps)"
        )
    return lines


def _time_lines(time: dict[str, Any]) -> list[str]:
    """``time`` as ``key=value`` lines, None and empty fields left out: the time fields, then
    the event binning and the NIR conventions (``semantics``) on lines of their own. A
    time-major program's T is its input's first axis, not ``timesteps``."""
    fields = dict(time)
    events, semantics = fields.pop("events", None), fields.pop("semantics", None)
    if "encoding" in fields and SpikingTime(**time).time_major:
        fields = {"T": "the input's first axis", **fields}
        del fields["timesteps"]
    lines = [("time", fields), ("events", events or {}), ("conventions", semantics or {})]
    return [f"{label:<6} {_pairs(values)}" for label, values in lines if _pairs(values)]


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v not in (None, "", [], {}))


def _show_report(console: Console, report: dict[str, Any], indent: str) -> None:
    """The report's known sections; one the manifest holds in another form than its writer's
    (a bundle's manifest is anyone's file) is named as malformed instead."""
    malformed = []
    for key, section in REPORT_SECTIONS.items():
        if key in report:
            try:
                section(console, report, indent)
            except (TypeError, ValueError, KeyError, AttributeError):
                malformed.append(key)
    if malformed:
        console.print(f"{indent}report: malformed {', '.join(malformed)} (not shown)", markup=False)


def _conversion_table(console: Console, report: dict[str, Any], indent: str) -> None:
    layers = report["layers"]
    if not isinstance(layers, dict):  # other reports may list their layers otherwise
        return
    table = Table("layer", "neurons", "threshold", "firing rate", title="conversion report")
    for name, row in layers.items():
        if isinstance(row, dict) and "firing_rate" in row:
            plain_row(
                table,
                name,
                f"{row.get('neurons', 0):,}",
                f"{row['threshold_min']:.4g}..{row['threshold_max']:.4g}",
                f"{row['firing_rate']:.3f}",
            )
    if table.row_count:
        console.print(table)


def _calibration_accuracy(console: Console, report: dict[str, Any], indent: str) -> None:
    line = f"ANN {report['ann_accuracy']:.4f}, SNN {report['snn_accuracy']:.4f}"
    console.print(f"{indent}calibration accuracy: {line}")


def _pairs_line(key: str) -> Callable[[Console, dict[str, Any], str], None]:
    def show(console: Console, report: dict[str, Any], indent: str) -> None:
        text = ", ".join(f"{k} {v}" for k, v in report[key].items())
        console.print(f"{indent}{key.replace('_', ' ')}: {text}", markup=False)

    return show


def _monotonicity(console: Console, report: dict[str, Any], indent: str) -> None:
    from ganglion.models.monotonicity import monotonicity_line

    console.print(f"{indent}{monotonicity_line(report['monotonicity'])}", markup=False)


def _training(console: Console, report: dict[str, Any], indent: str) -> None:
    """What ``ganglion train`` reached: test accuracy (vision) or held-out BPC (language)."""
    training = report["training"]
    scores = []
    if training.get("test_accuracy") is not None:
        scores.append(f"test accuracy {training['test_accuracy']:.4f}")
    if training.get("heldout_bpc") is not None:
        scores.append(f"held-out bits per character {training['heldout_bpc']:.3f}")
    span = [f"{training[k]:,} {k}" for k in ("epochs", "steps") if k in training]
    if scores:
        after = f" after {', '.join(span)}" if span else ""
        console.print(f"{indent}training: {', '.join(scores)}{after}", markup=False)


def _stages(console: Console, report: dict[str, Any], indent: str) -> None:
    """The quality at each stage of a SpikeGPT conversion (``conversion``) or of a
    linearization (``linearization``: bits per character for a language model, test accuracy
    for ViG), the stages not run left out."""
    key = "conversion" if "conversion" in report else "linearization"
    data = report[key]
    if key == "conversion":
        stages = ("rwkv", "uncalibrated", "calibrated", "finetuned")
        values = [(s, data.get(f"{s}_bpc")) for s in stages]
        unit = "bits per character"
    elif "source_accuracy" in data:
        stages = ("source", "carried", "transferred", "finetuned")
        values = [(s, data.get(f"{s}_accuracy")) for s in stages]
        unit = "test accuracy"
    else:
        stages = ("source", "carried", "transferred", "finetuned")
        values = [(s, (data.get(s) or {}).get("bpc")) for s in stages]
        unit = "bits per character"
    shown = [f"{s} {float(v):.4g}" for s, v in values if v is not None]
    if shown:
        console.print(f"{indent}{key}: {unit} {', '.join(shown)}", markup=False)


REPORT_SECTIONS: dict[str, Callable[[Console, dict[str, Any], str], None]] = {
    "layers": _conversion_table,
    "ann_accuracy": _calibration_accuracy,
    "accuracy_check": _pairs_line("accuracy_check"),
    "quality": _pairs_line("quality"),
    "monotonicity": _monotonicity,
    "training": _training,
    "conversion": _stages,
    "linearization": _stages,
}


def register(app: typer.Typer) -> None:
    """Add ``inspect`` to the CLI."""
    app.command("inspect")(inspect)
