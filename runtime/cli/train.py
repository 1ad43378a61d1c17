"""``ganglion train``: the small training recipes, on data that ships offline, into bundles.

``train lm`` trains a byte-level language model on Python's own prose (``pydoc_data``) or
code (the standard library) and reports held-out bits per character; ``train vision`` trains
an image classifier on scikit-learn's digits.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ganglion.models.errors import GanglionError
from ganglion.runtime.atomic import check_target

train_app = typer.Typer(
    rich_markup_mode=None,
    help="Train a small model on offline data into a bundle.",
    no_args_is_help=True,
)

LM_ARCHITECTURES = ("rwkv", "spikegpt", "gla", "gam", "gpt")
VISION_ARCHITECTURES = ("vig", "vit")
MAX_WIDTH = 4096  # --d-model
MAX_LAYERS = 64
MAX_BATCH = 4096  # --batch (windows per step)
MAX_LENGTH = 65536  # --length (tokens per window)
MAX_UPSAMPLE = 16  # digits 8x8 -> at most 128x128
MAX_BLOCK_PARAMETERS = 1 << 28  # about 12 * layers * d_model**2, checked before building
MAX_SEED = 2**32 - 1  # the digits split's seed (scikit-learn's random_state) takes no more
MAX_STEPS = 10**6  # --steps: days of CPU time already
MAX_EPOCHS = 10**4  # --epochs
MAX_TOKENS_PER_STEP = 1 << 20  # --batch x --length: the activations of one step are bounded


def step_progress(total: int, what: str) -> Progress:
    """A progress bar of ``total`` steps with the loss, on stderr while it is a terminal (a log
    or a pipe gets nothing, not even the blank line a finished bar leaves)."""
    return Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=total == 0 or not sys.stderr.isatty(),
    )


def _check_sizes(sizes: tuple[tuple[str, int, int | None], ...]) -> None:
    """Each (flag, value, largest allowed or None) in range, and the blocks' parameters (about
    12 * layers * d_model**2) within MAX_BLOCK_PARAMETERS; a one-line error naming the flag."""
    values = {}
    for flag, value, largest in sizes:
        if value < 1 or (largest is not None and value > largest):
            bound = "" if largest is None else f" and at most {largest}"
            raise GanglionError(f"{flag} must be at least 1{bound}, got {value}")
        values[flag] = value
    estimate = 12 * values["--layers"] * values["--d-model"] ** 2
    if estimate > MAX_BLOCK_PARAMETERS:
        raise GanglionError(
            f"--d-model {values['--d-model']} with --layers {values['--layers']} is about "
            f"{estimate:,} parameters, more than the {MAX_BLOCK_PARAMETERS:,} these recipes allow"
        )


def _check_choice(value: str, choices: tuple[str, ...], flag: str) -> None:
    if value not in choices:
        raise GanglionError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


@train_app.command("lm")
def train_lm_command(
    arch: str = typer.Option(..., "--arch", help="rwkv | spikegpt | gla | gam | gpt"),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    corpus: str = typer.Option("prose", "--corpus", help="prose (pydoc topics) | code (stdlib)"),
    steps: int = typer.Option(300, "--steps", help="Optimizer steps."),
    d_model: int = typer.Option(128, "--d-model", help="Model width."),
    layers: int = typer.Option(2, "--layers", help="Blocks."),
    batch: int = typer.Option(16, "--batch", help="Windows per step."),
    length: int = typer.Option(128, "--length", help="Tokens per window."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initialization and the sampler."),
    eval_chars: int | None = typer.Option(
        None,
        "--eval-chars",
        help="Held-out characters scored (default: the whole split; 0: none, so the manifest "
        "records no bits per character).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Train a byte-level language model; held-out bits per character go in the manifest."""
    _check_choice(arch, LM_ARCHITECTURES, "--arch")
    _check_sizes(
        (
            ("--steps", steps, MAX_STEPS),
            ("--d-model", d_model, MAX_WIDTH),
            ("--layers", layers, MAX_LAYERS),
            ("--batch", batch, MAX_BATCH),
            ("--length", length, MAX_LENGTH),
        )
    )
    if batch * length > MAX_TOKENS_PER_STEP:
        raise GanglionError(
            f"--batch x --length must be at most {MAX_TOKENS_PER_STEP} tokens per step, got "
            f"{batch} x {length}"
        )
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise GanglionError(f"--lr must be a finite number in (0, 10], got {lr}")
    if not 0 <= seed <= MAX_SEED:
        raise GanglionError(f"--seed must be in [0, {MAX_SEED}], got {seed}")
    if eval_chars is not None and (eval_chars < 0 or eval_chars == 1):
        raise GanglionError(
            f"--eval-chars must be 0 (no scoring) or at least 2 (one character scored from the "
            f"one before), got {eval_chars}"
        )
    check_target(output, force)
    import torch

    from ganglion.models.recipes.lm_training import train_lm
    from ganglion.models.recipes.text import load_corpus
    from ganglion.models.sequence import sequence_model_class
    from ganglion.models.sequence.program import sequence_deployable
    from ganglion.runtime.bundle import save_bundle

    data = load_corpus(corpus)
    torch.manual_seed(seed)
    cls = sequence_model_class(arch)
    try:
        model = cls.from_config({**cls().to_config(), "d_model": d_model, "n_layers": layers})
    except ValueError as exc:  # a width the architecture's heads do not divide
        raise GanglionError(f"--d-model {d_model} for --arch {arch}: {exc}") from None
    if model.context is not None and length > model.context:
        raise GanglionError(f"--length {length} exceeds {arch}'s context of {model.context}")
    with step_progress(steps, f"train {arch} on {corpus}") as progress:
        task = progress.add_task("train", total=steps, loss="-")
        report = train_lm(
            model,
            data,
            steps,
            batch,
            length,
            lr,
            seed,
            lambda step, loss: progress.update(task, completed=step, loss=f"{loss:.3f}"),
            eval_chars,
        )
    provenance = {
        "recipe": "ganglion.models.recipes.lm_training",
        "corpus": corpus,
        "corpus_sha256": data.sha256,
    }
    path = save_bundle(
        sequence_deployable(model, {"training": report.to_dict()}, provenance), output, force
    )
    console = Console(highlight=False)
    console.print(
        f"{arch}: {report.parameters:,} parameters, {report.tokens_seen:,} tokens in "
        f"{report.seconds:.1f} s; final loss {report.final_loss:.3f} nats/token"
    )
    if report.heldout_bpc is not None:
        console.print(f"held-out bits per character ({corpus}): {report.heldout_bpc:.3f}")
    console.print(f"bundle written to {path}")


@train_app.command("vision")
def train_vision_command(
    arch: str = typer.Option(..., "--arch", help="vig | vit"),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    epochs: int = typer.Option(30, "--epochs", help="Passes over the training split."),
    upsample: int = typer.Option(1, "--upsample", help="Digits 8x8 upsampled by this factor."),
    d_model: int = typer.Option(64, "--d-model", help="Model width."),
    layers: int = typer.Option(4, "--layers", help="Blocks."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Train ViG or ViT on scikit-learn's digits; test accuracy goes in the manifest."""
    _check_choice(arch, VISION_ARCHITECTURES, "--arch")
    _check_sizes(
        (
            ("--epochs", epochs, MAX_EPOCHS),
            ("--upsample", upsample, MAX_UPSAMPLE),
            ("--d-model", d_model, MAX_WIDTH),
            ("--layers", layers, MAX_LAYERS),
        )
    )
    if not 0 <= seed <= MAX_SEED:
        raise GanglionError(f"--seed must be in [0, {MAX_SEED}], got {seed}")
    check_target(output, force)
    import torch

    from ganglion.models.recipes.digits import load_digits
    from ganglion.models.recipes.vision_training import train_vision
    from ganglion.models.vision import vision_model_class
    from ganglion.models.vision.program import vision_deployable
    from ganglion.runtime.bundle import save_bundle

    torch.manual_seed(seed)
    cls = vision_model_class(arch)
    model = cls.from_config(
        {**cls().to_config(), "upsample": upsample, "d_model": d_model, "n_layers": layers}
    )
    data = load_digits(image=True, seed=seed)
    with step_progress(epochs, f"train {arch} on digits") as progress:
        task = progress.add_task("train", total=epochs, loss="-")
        report = train_vision(
            model,
            data,
            epochs,
            seed,
            lambda epoch, loss: progress.update(task, completed=epoch, loss=f"{loss:.3f}"),
        )
    path = save_bundle(vision_deployable(model, {"training": report.to_dict()}), output, force)
    console = Console(highlight=False)
    console.print(f"{arch}: test accuracy {report.test_accuracy:.4f}")
    console.print(f"bundle written to {path}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.add_typer(train_app, name="train")
