"""``ganglion generate``: stream tokens from a language-model bundle on any backend."""

from __future__ import annotations

import codecs
import sys
import time
from pathlib import Path

import numpy as np
import typer

from ganglion.models.errors import GanglionError, ShapeError
from ganglion.runtime.generation import MAX_NEW_TOKENS, GenerationError, Sampling, generate
from ganglion.runtime.session import load

# control characters other than newline and tab are printed as their escapes (a model's bytes
# never move the terminal's cursor, ring it or start an escape sequence)
VISIBLE_CONTROLS = {
    c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(c) not in "\n\t"
}


def prompt_ids(prompt: str, flag: str = "--prompt") -> np.ndarray:
    """Token ids (int64) of ``prompt`` (given as ``flag``): its UTF-8 bytes, where argv bytes
    that are not UTF-8 (which Python passes as surrogate escapes, PEP 383) are their own byte
    tokens."""
    try:
        data = prompt.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as exc:
        raise GanglionError(
            f"{flag}: character {exc.start} is a lone surrogate, not text or a byte"
        ) from None
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64)


def generate_command(
    bundle: Path = typer.Argument(..., help="Sequence bundle (folder or .tar)."),
    prompt: str = typer.Option(..., "--prompt", help="Text to continue (UTF-8 bytes are tokens)."),
    max_tokens: int = typer.Option(
        128, "--max-tokens", min=1, max=MAX_NEW_TOKENS, help="Tokens to generate."
    ),
    temperature: float = typer.Option(0.0, "--temperature", help="0: greedy."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Sample among the k likeliest."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling threshold."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Sampling seed."),
    backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime | tensorrt"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
) -> None:
    """Continue a prompt token by token, printing text as it comes (tokens/s at the end)."""
    sampling = Sampling(max_tokens, temperature, top_k, top_p, seed)
    ids = prompt_ids(prompt)
    with load(bundle, backend=backend, device=device) as session:
        start, tokens = time.perf_counter(), []
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for token in generate(session, ids, sampling):
                tokens.append(token)
                text = decoder.decode(bytes([token]))  # whole characters as they come
                sys.stdout.write(text.translate(VISIBLE_CONTROLS))
                sys.stdout.flush()
        except GenerationError as exc:
            raise GenerationError(f"{bundle}: {exc}") from None
        except ShapeError as exc:  # the prompt does not fit the model (its length, its ids)
            raise ShapeError(f"--prompt ({len(ids)} bytes) for {bundle}: {exc}") from None
        seconds = time.perf_counter() - start
    sys.stdout.write(decoder.decode(b"", final=True).translate(VISIBLE_CONTROLS) + "\n")
    rate = len(tokens) / seconds if seconds > 0 else float("inf")
    context = getattr(session.manifest.time, "context", 0)
    stopped = (
        f"; stopped at the model's context of {context} tokens"
        if len(tokens) < max_tokens and context and len(ids) + len(tokens) >= context
        else ""
    )
    typer.echo(
        f"[{len(tokens)} tokens in {seconds:.2f} s: {rate:.1f} tokens/s, {backend}{stopped}]",
        err=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``generate`` to the CLI."""
    app.command("generate")(generate_command)
