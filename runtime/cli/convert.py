"""``ganglion convert``: trained models (torch.export archives, ONNX) -> bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ganglion.models.errors import ConversionError, GanglionError, ShapeError, first_line
from ganglion.models.manifest import NAME
from ganglion.runtime.atomic import check_target
from ganglion.runtime.cli.arrays import check_finite_array, load_calibration, read_npz
from ganglion.runtime.cli.pairs import option_pairs
from ganglion.runtime.cli.train import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_STEPS,
    step_progress,
)

MAX_CALIB_WINDOWS = 1024  # spikegpt calibration windows of 256 tokens: about 1.2 GB at 1024


def _naming(source: Path, error: Exception) -> ConversionError:
    """``error`` as one line that names the model file it came from."""
    text = first_line(error)
    return ConversionError(text if str(source) in text else f"{source}: {text}")


convert_app = typer.Typer(
    rich_markup_mode=None,
    help="Convert a trained PyTorch model into a deployable bundle.",
    no_args_is_help=True,
)


@convert_app.command("spiking")
def spiking(
    model: Path = typer.Argument(
        ..., help="Trained ReLU network: torch.export.save archive (.pt2) or ONNX (.onnx)."
    ),
    calib: Path = typer.Option(
        ..., "--calib", help="NPZ with calibration inputs 'x' (labels 'y' optional)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    timesteps: int = typer.Option(32, "--timesteps", help="Timesteps T per inference."),
    neuron: str = typer.Option("if", "--neuron", help="if | lif"),
    encoding: str = typer.Option("direct", "--encoding", help="direct | rate (Poisson, seeded)"),
    decoding: str = typer.Option("membrane", "--decoding", help="membrane | count"),
    method: str = typer.Option(
        "percentile",
        "--method",
        help="percentile (default) | mse (squared-error thresholds at T) | calibrated (mse, "
        "then bias and initial-membrane calibration against the ANN) | burst (several spikes "
        "per step allowed): the last three are for small T.",
    ),
    percentile: float = typer.Option(
        99.9, "--percentile", help="Activation percentile for thresholds (--method percentile)."
    ),
    per_channel: bool = typer.Option(
        False, "--per-channel", help="Thresholds per channel, not per layer."
    ),
    reset: str = typer.Option("subtract", "--reset", help="subtract | zero"),
    seed: int = typer.Option(0, "--seed", help="Seed of the rate encoder."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Convert a trained ReLU network into a spiking program (IF/LIF neurons)."""
    from ganglion.converters.exported_archive import load_exported
    from ganglion.converters.spiking import SpikingOptions, convert_spiking
    from ganglion.converters.spiking.onnx_ann import read_ann_onnx
    from ganglion.runtime.bundle import save_bundle

    check_target(output, force, reads=(model, calib))
    source = read_ann_onnx(model) if model.suffix == ".onnx" else load_exported(model)
    x, y = load_calibration(calib)
    opts = SpikingOptions(
        timesteps=timesteps,
        neuron=neuron,
        encoding=encoding,
        decoding=decoding,
        percentile=percentile,
        per_channel=per_channel,
        reset=reset,
        seed=seed,
        method=method,
    )
    try:
        deployable = convert_spiking(source, x, y, opts)
    except (GanglionError, ValueError, RuntimeError, TypeError) as exc:
        raise _naming(model, exc) from exc
    deployable.manifest.provenance["source_file"] = model.name
    path = save_bundle(deployable, output, force)
    console = Console(highlight=False, soft_wrap=True)
    report = deployable.manifest.report
    for name, layer in report["layers"].items():
        console.print(
            f"{name}: threshold {layer['threshold_min']:.4g}..{layer['threshold_max']:.4g}"
            f", firing rate {layer['firing_rate']:.3f}"
        )
    for name, layer in report.get("calibration", {}).items():
        console.print(
            f"calibrated {name}: error vs ANN, RMS {layer['rmse_before']:.4g} -> "
            f"{layer['rmse_after']:.4g}, mean per channel {layer['mean_error_before']:.3g} -> "
            f"{layer['mean_error_after']:.3g}"
        )
    if "ann_accuracy" in report:
        console.print(
            f"accuracy on calibration data: ANN {report['ann_accuracy']:.4f}, "
            f"SNN {report['snn_accuracy']:.4f} (T={timesteps}, method {method})"
        )
    console.print(f"bundle written to {path}")


@convert_app.command("dense")
def dense(
    model: Path = typer.Argument(
        ..., help="Trained network: torch.export.save archive (.pt2) or ONNX (.onnx)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    calib: Path | None = typer.Option(
        None,
        "--calib",
        help="NPZ of calibration inputs by name ('x' for a single input; integer labels 'y' "
        "optional): checks the ONNX graph against the source, calibrates int8.",
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32 | int8 (adds ONNX Runtime's static QDQ graph)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Deploy any trained network as it is (a dense program: named inputs and outputs)."""
    import onnx  # the converter's own dependency, loaded with it

    from ganglion.converters.dense import convert_dense
    from ganglion.converters.exported_archive import load_exported
    from ganglion.converters.onnx_file import load_onnx
    from ganglion.runtime.bundle import save_bundle
    from ganglion.runtime.tensors import shape_text

    check_target(output, force, reads=(model, calib))
    source = load_onnx(model) if model.suffix == ".onnx" else load_exported(model)
    data = read_npz(calib) if calib is not None else None
    try:
        deployable = convert_dense(source, data, precision)
    except (GanglionError, ValueError, RuntimeError, TypeError) as exc:
        raise _naming(model, exc) from exc
    deployable.manifest.provenance["source_file"] = model.name
    try:
        path = save_bundle(deployable, output, force)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        # the graph the bundle would hold fails ONNX's checker: name the user's file
        raise _naming(model, exc) from exc
    console = Console(highlight=False, soft_wrap=True)
    m = deployable.manifest
    for kind, specs in (("input", m.inputs), ("output", m.outputs)):
        for spec in specs:
            console.print(
                f"{kind} {spec.name}: {spec.dtype} {shape_text(spec.shape)}", markup=False
            )
    for check, figures in m.report.get("accuracy_check", {}).items():
        text = ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
        console.print(f"{check.replace('_', ' ')}: {text}", markup=False)
    console.print(f"bundle written to {path} (precisions: {', '.join(m.provenance['precisions'])})")


@convert_app.command("spikegpt")
def spikegpt(
    model: Path = typer.Argument(..., help="An RWKV language-model bundle (ganglion train lm)."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    finetune_steps: int = typer.Option(
        0, "--finetune-steps", min=0, max=MAX_STEPS, help="Surrogate-gradient steps."
    ),
    calib_windows: int = typer.Option(
        8, "--calib-windows", min=1, max=MAX_CALIB_WINDOWS, help="256-token calibration windows."
    ),
    eval_chars: int | None = typer.Option(
        None, "--eval-chars", help="Held-out characters scored at each stage (default: all)."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=MAX_SEED, help="Seed of the calibration windows and fine-tune."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Make a trained RWKV LM spiking (SpikeGPT form): LIF neurons calibrated on its corpus."""
    import numpy as np
    import torch

    from ganglion.converters.spikegpt import convert_spikegpt
    from ganglion.models.recipes.text import CORPORA, load_corpus, random_windows
    from ganglion.models.sequence.program import sequence_deployable
    from ganglion.runtime.bundle import load_bundle, save_bundle

    check_target(output, force, reads=(model,))
    source = load_bundle(model)
    if source.manifest.architecture != "rwkv":
        raise ConversionError(
            f"{model}: convert spikegpt takes an RWKV bundle, "
            f"this is {source.manifest.architecture!r}"
        )
    name = source.manifest.provenance.get("corpus", "prose")
    corpus = load_corpus(name if name in CORPORA else "prose")
    calib = random_windows(corpus.train, calib_windows, 255, np.random.default_rng(seed))
    progress = step_progress(finetune_steps, "fine-tune")
    with progress:
        task = progress.add_task("fine-tune", total=max(finetune_steps, 1), loss="-")
        snn, report = convert_spikegpt(
            source.module,
            torch.from_numpy(calib),
            finetune_steps,
            corpus,
            eval_chars=eval_chars,
            seed=seed,
            progress=lambda step, loss: progress.update(task, completed=step, loss=f"{loss:.3f}"),
        )
    provenance = {
        **source.manifest.provenance,
        "converter": "ganglion.converters.spikegpt",
        "source_bundle": str(model),
    }
    path = save_bundle(
        sequence_deployable(snn, {"conversion": report.to_dict()}, provenance), output, force
    )
    console = Console(highlight=False)
    for stage in ("rwkv_bpc", "uncalibrated_bpc", "calibrated_bpc", "finetuned_bpc"):
        value = getattr(report, stage)
        if value is not None:
            console.print(f"{stage.removesuffix('_bpc').replace('_', ' ')}: {value:.3f} bits/char")
    console.print(
        f"tokens spent: {report.calibration_tokens:,} calibration, "
        f"{report.finetune_tokens:,} fine-tune"
    )
    console.print(f"bundle written to {path}")


@convert_app.command("ensemble")
def ensemble(
    members: list[Path] = typer.Argument(..., help="Expert bundles; NAME=BUNDLE names one."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    calib: Path | None = typer.Option(
        None, "--calib", help="Classifiers: NPZ of inputs by name ('x' for one) and labels 'y'."
    ),
    corpora: str = typer.Option(
        "prose,code", "--corpora", help="Token models: the offline corpora to calibrate on."
    ),
    windows: int = typer.Option(32, "--windows", help="Token models: windows per corpus."),
    top_k: int | None = typer.Option(None, "--top-k", help="Experts kept per input."),
    placement: list[str] = typer.Option(
        [], "--placement", help="EXPERT=DEVICE: the device profile an expert is meant for."
    ),
    epochs: int = typer.Option(300, "--epochs", min=1, max=100_000, help="Gate training epochs."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Gate training seed."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Build an MoE² ensemble: frozen experts plus a gate trained post-hoc on calibration data."""
    from ganglion.converters.ensemble import convert_ensemble
    from ganglion.runtime.bundle import load_bundle, save_bundle
    from ganglion.runtime.ensemble_calibration import all_expert_probabilities

    specs = [_member_spec(spec) for spec in members]
    check_target(output, force, reads=(*(path for _, path in specs), calib))
    experts = {}
    for name, path in specs:
        if not NAME.match(name):
            raise ConversionError(f"expert name {name!r}: use 1-128 letters, digits or _.:-")
        if name in experts:
            raise ConversionError(f"two experts are named {name!r}; name them NAME=BUNDLE")
        experts[name] = load_bundle(path)
    form = f"EXPERT=DEVICE for one of {sorted(experts)}"
    places = option_pairs(placement, "--placement", form, ConversionError)
    unknown = sorted(set(places) - set(experts))
    if unknown:
        raise ConversionError(f"--placement names {unknown[0]!r}: give {form}")
    if places:
        from ganglion.device.profiles.registry import get_profile

        for expert, device in places.items():  # refused now, not at select time
            why = get_profile(device).refuses(experts[expert].manifest.kind)
            if why is not None:
                raise ConversionError(f"--placement {expert}={device}: {why}")
    token = {n for n, e in experts.items() if e.manifest.kind == "sequence"}
    if token and len(token) < len(experts):
        lm, other = sorted(token)[0], sorted(set(experts) - token)[0]
        raise ConversionError(
            f"an ensemble is of language models or of classifiers, not both: {lm!r} is a "
            f"language model, {other!r} a {experts[other].manifest.kind} program"
        )
    if token:
        program = _token_ensemble(experts, corpora, windows, top_k, places, epochs, seed)
        path = save_bundle(program, output, force)
        quality = program.manifest.report["quality"]
        Console(highlight=False).print(
            ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in quality.items())
        )
        Console(highlight=False).print(f"ensemble of {len(experts)} token models written to {path}")
        return
    if calib is None:
        raise ConversionError("an ensemble of classifiers needs --calib CALIB.npz (inputs, 'y')")
    data = read_npz(calib)
    if "y" not in data:
        raise ConversionError(f"{calib}: needs integer labels 'y' to train the gate")
    labels = data.pop("y")
    first = next(iter(experts.values())).manifest.inputs
    names = [s.name for s in first]
    alias = data.get("x") if len(names) == 1 else None  # 'x' stands for a lone input
    ordered = {n: data[n] if n in data else alias for n in names}  # its own name first
    if any(v is None for v in ordered.values()):
        raise ConversionError(f"{calib}: needs inputs {names} (or 'x' for one input)")
    for name, array in ordered.items():
        check_finite_array(calib, name if name in data else "x", array)
    try:
        probs = all_expert_probabilities(experts, ordered)
    except ShapeError as exc:  # an expert does not take these inputs: name the file too
        raise ShapeError(f"{calib}: {exc}") from None
    program = convert_ensemble(experts, ordered, labels, probs, top_k, places, epochs, seed=seed)
    path = save_bundle(program, output, force)
    console = Console(highlight=False)
    quality = program.manifest.report["quality"]
    console.print(", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in quality.items()))
    console.print(f"ensemble of {len(experts)} experts written to {path}")


def _member_spec(spec: Path) -> tuple[str, str]:
    """(name, path) of an ensemble member given as NAME=BUNDLE or BUNDLE (named by its folder)."""
    name, sep, path = str(spec).partition("=")
    return (name, path) if sep else (Path(name).name, name)


def _token_ensemble(
    experts: dict, corpora: str, windows: int, top_k, places, epochs: int, seed: int
) -> Any:
    import numpy as np

    from ganglion.converters.ensemble import convert_lm_ensemble
    from ganglion.models.recipes.text import CORPORA, load_corpus, random_windows
    from ganglion.runtime.ensemble_calibration import token_expert_probabilities

    names = [c.strip() for c in corpora.split(",") if c.strip()]
    unknown = [c for c in names if c not in CORPORA]
    if unknown or not names or windows < 1:
        raise ConversionError(f"--corpora takes {', '.join(CORPORA)} and --windows >= 1")
    rng = np.random.default_rng(seed)
    chunks = [random_windows(load_corpus(c).train, windows, 128, rng) for c in names]
    calib = np.concatenate(chunks)
    probs = token_expert_probabilities(experts, calib)
    return convert_lm_ensemble(experts, calib, probs, top_k, places, epochs, seed=seed)


@convert_app.command("linear")
def linear(
    model: Path = typer.Argument(
        ...,
        help="A gpt language-model bundle (ganglion train lm --arch gpt), a vit image-classifier "
        "bundle (ganglion train vision --arch vit), or a torch.export archive (.pt2) of a "
        "pre-norm causal Transformer LM (nn.TransformerEncoderLayer or nn.MultiheadAttention "
        "blocks, byte vocabulary).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    to: str | None = typer.Option(
        None, "--to", help="gla | gam for a language model (required); vig for a vit (default)."
    ),
    distill_steps: int | None = typer.Option(
        None,
        "--distill-steps",
        min=0,
        max=MAX_STEPS,
        help="Attention-transfer steps (default 100; a vit: 200).",
    ),
    finetune_steps: int | None = typer.Option(
        None,
        "--finetune-steps",
        min=0,
        max=MAX_STEPS,
        help="Language models: fine-tune steps (default 200).",
    ),
    finetune_epochs: int | None = typer.Option(
        None,
        "--finetune-epochs",
        min=0,
        max=MAX_EPOCHS,
        help="A vit: fine-tune epochs over the digits (default 5).",
    ),
    batch: int | None = typer.Option(
        None, "--batch", help="Per step: windows of 128 bytes (default 4); a vit: images (64)."
    ),
    corpus: str | None = typer.Option(
        None, "--corpus", help="prose | code (default: the bundle's training corpus, or prose)."
    ),
    eval_chars: int | None = typer.Option(
        None, "--eval-chars", help="Held-out characters scored at each stage (default: all)."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=MAX_SEED, help="Seed of the new weights and the windows."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Make a trained softmax Transformer linear-time: a language model into GLA or GAM, a ViT
    into ViG (weights carried over, attention transfer, fine-tune)."""
    from ganglion.runtime.bundle import load_bundle, save_bundle

    check_target(output, force, reads=(model,))
    bundle = None if model.suffix == ".pt2" else load_bundle(model)
    if bundle is not None and bundle.manifest.architecture == "vit":
        language_only = {
            "--finetune-steps": finetune_steps,
            "--corpus": corpus,
            "--eval-chars": eval_chars,
        }
        given = [flag for flag, value in language_only.items() if value is not None]
        if given:
            raise ConversionError(
                f"{', '.join(given)}: for language models; a vit takes --finetune-epochs"
            )
        _linear_vision(
            model,
            bundle,
            output,
            to or "vig",
            200 if distill_steps is None else distill_steps,
            5 if finetune_epochs is None else finetune_epochs,
            64 if batch is None else batch,
            seed,
            force,
        )
        return
    if to not in ("gla", "gam"):
        raise ConversionError(f"--to must be gla or gam for a language model, got {to or 'none'}")
    if finetune_epochs is not None:
        raise ConversionError("--finetune-epochs is for a vit; language models: --finetune-steps")
    distill_steps = 100 if distill_steps is None else distill_steps
    finetune_steps = 200 if finetune_steps is None else finetune_steps
    batch = 4 if batch is None else batch
    if distill_steps < 0 or finetune_steps < 0 or not 1 <= batch <= MAX_BATCH:
        raise ConversionError(
            f"--distill-steps and --finetune-steps must be >= 0, --batch in [1, {MAX_BATCH}]"
        )
    if eval_chars is not None and eval_chars < 2:
        raise ConversionError(
            f"--eval-chars must be at least 2 (one character scored from the one before), "
            f"got {eval_chars}"
        )
    from ganglion.converters.exported_archive import load_exported
    from ganglion.converters.linearize import gpt_from_exported, linearize
    from ganglion.models.recipes.text import CORPORA, VOCAB_SIZE, load_corpus
    from ganglion.models.sequence.program import sequence_deployable

    if bundle is None:
        try:
            source = gpt_from_exported(load_exported(model))
        except (GanglionError, ValueError) as exc:  # a network convert linear does not read
            raise _naming(model, exc) from exc
        provenance: dict[str, Any] = {"source_file": model.name}
        source_tokens = None
    else:
        if bundle.manifest.architecture != "gpt":
            raise ConversionError(
                f"{model}: convert linear takes a gpt or vit bundle or a .pt2, "
                f"this is {bundle.manifest.architecture!r}"
            )
        source = bundle.module
        provenance = {**bundle.manifest.provenance, "source_bundle": str(model)}
        source_tokens = bundle.manifest.report.get("training", {}).get("tokens_seen")
    if source.vocab_size < VOCAB_SIZE:
        raise ConversionError(
            f"{model}: a vocabulary of {source.vocab_size} tokens; the calibration text is "
            f"bytes ({VOCAB_SIZE} ids)"
        )
    name = corpus or provenance.get("corpus", "prose")
    if name not in CORPORA:
        raise ConversionError(f"--corpus must be one of {', '.join(CORPORA)}, got {name!r}")
    text = load_corpus(name)
    progress = step_progress(distill_steps + finetune_steps, f"linearize to {to}")
    with progress:
        task = progress.add_task(
            "linearize", total=max(distill_steps + finetune_steps, 1), loss="-"
        )

        def advance(stage: str, step: int, loss: float) -> None:
            done = step + (distill_steps if stage == "fine-tune" else 0)
            progress.update(task, completed=done, loss=f"{loss:.3f}")

        target, report = linearize(
            source,
            to,
            text,
            distill_steps,
            finetune_steps,
            batch=batch,
            eval_chars=eval_chars,
            source_tokens=source_tokens,
            seed=seed,
            progress=advance,
        )
    provenance |= {
        "converter": "ganglion.converters.linearize",
        "corpus": text.name,
        "corpus_sha256": text.sha256,
    }
    deployable = sequence_deployable(target, {"linearization": report.to_dict()}, provenance)
    path = save_bundle(deployable, output, force)
    console = Console(highlight=False)
    for stage in ("source", "carried", "transferred", "finetuned"):
        quality = getattr(report, stage)
        if quality is not None:
            console.print(
                f"{stage}: {quality.bpc:.3f} bits/char, perplexity {quality.perplexity:.3f}"
            )
    fraction = (
        "" if report.token_fraction is None else f" ({report.token_fraction:.1%} of the source's)"
    )
    console.print(
        f"tokens spent: {report.distill_tokens:,} transfer + {report.finetune_tokens:,} "
        f"fine-tune{fraction}"
    )
    console.print(f"bundle written to {path}")


def _linear_vision(
    model: Path,
    bundle: Any,
    output: Path,
    to: str,
    distill_steps: int,
    finetune_epochs: int,
    batch: int,
    seed: int,
    force: bool,
) -> None:
    """``convert linear`` of a vit bundle: a ViG by ``linearize_vision`` on the digits split the
    ViT was trained on (its training seed), the test accuracy of each stage in the manifest."""
    from ganglion.converters.linearize import linearize_vision
    from ganglion.models.recipes.digits import load_digits
    from ganglion.models.vision.program import vision_deployable
    from ganglion.models.vision.vit import ViT
    from ganglion.runtime.bundle import save_bundle

    if to != "vig":
        raise ConversionError(f"--to must be vig for a vit, got {to!r}")
    if distill_steps < 0 or finetune_epochs < 0 or not 1 <= batch <= MAX_BATCH:
        raise ConversionError(
            f"--distill-steps and --finetune-epochs must be >= 0, --batch in [1, {MAX_BATCH}]"
        )
    source = getattr(bundle.module, "inner", None)
    if not isinstance(source, ViT):
        raise ConversionError(f"{model}: the vit bundle does not hold a ViT")
    c = source.config
    if (c.channels, c.image_size, c.num_classes) != (1, 8, 10):
        raise ConversionError(
            f"{model}: convert linear calibrates a vit on digits (1x8x8, 10 classes); this one "
            f"takes {c.channels}x{c.image_size}x{c.image_size} images, {c.num_classes} classes"
        )
    split_seed = int(bundle.manifest.report.get("training", {}).get("seed", 0))
    data = load_digits(image=True, seed=split_seed)
    with Console(stderr=True).status("linearize vit to vig (attention transfer, fine-tune)"):
        target, report = linearize_vision(
            source, data, distill_steps, finetune_epochs, batch=batch, seed=seed
        )
    provenance = {
        **bundle.manifest.provenance,
        "source_bundle": str(model),
        "converter": "ganglion.converters.linearize",
        "data": "scikit-learn digits",
        "digits_split_seed": split_seed,
    }
    deployable = vision_deployable(target, {"linearization": report.to_dict()}, provenance)
    path = save_bundle(deployable, output, force)
    console = Console(highlight=False)
    for stage in ("source", "carried", "transferred", "finetuned"):
        value = getattr(report, f"{stage}_accuracy")
        if value is not None:
            console.print(f"{stage}: test accuracy {value:.4f}")
    console.print(
        f"images spent: {report.distill_images:,} transfer + {report.finetune_images:,} fine-tune"
    )
    console.print(f"bundle written to {path}")


def register(app: typer.Typer) -> None:
    """Add ``convert`` to the CLI."""
    app.add_typer(convert_app, name="convert")
