"""``ganglion deploy`` (upload a bundle to a node), ``ganglion infer`` (call a node's model)
and ``ganglion sign`` (sign a bundle with model-signing); see ``runtime/serving``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

TO_HELP = "Node address HOST:PORT."
TOKEN_HELP = "File holding the node's bearer token."
CA_HELP = "CA certificate that signed the node's (turns TLS on)."


def _client(
    to: str,
    token_file: Path | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    timeout_s: float,
) -> Any:
    from ganglion.runtime.serving.client import NodeClient
    from ganglion.runtime.serving.security import read_token

    token = read_token(token_file) if token_file is not None else None
    return NodeClient(
        to, token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, timeout_s=timeout_s
    )


def deploy(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar (its NAME.sig goes along)."),
    to: str = typer.Option(..., "--to", help=TO_HELP),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the bundle's)."),
    load: bool = typer.Option(False, "--load", help="Keep it loaded and serving."),
    replace: bool = typer.Option(False, "--replace", help="Replace a model of the same name."),
    signature: Path | None = typer.Option(None, "--signature", help="Signature file."),
    token_file: Path | None = typer.Option(None, "--token-file", help=TOKEN_HELP),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help=CA_HELP),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Client certificate (mTLS)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Client key (mTLS)."),
    timeout_s: float = typer.Option(600.0, "--timeout", help="Seconds for the whole upload."),
    as_json: bool = typer.Option(False, "--json", help="Print the node's reply as JSON."),
) -> None:
    """Upload a bundle to a node, which verifies it, warms it up and measures it."""
    import asyncio

    from google.protobuf.json_format import MessageToDict

    from ganglion.runtime.serving.repository import model_name_of

    model, path = model_name_of(f"{name}={bundle}" if name else str(bundle))

    async def upload() -> Any:
        async with _client(to, token_file, tls_ca, tls_cert, tls_key, timeout_s) as client:
            return await client.upload(path, model, load, replace, signature)

    reply = asyncio.run(upload())
    if as_json:
        typer.echo(json.dumps(MessageToDict(reply, always_print_fields_with_no_presence=True)))
        return
    m = reply.measurement
    signer = f", signed by {reply.signed_by}" if reply.signed_by else ""
    state = "loaded" if reply.loaded else "installed (not loaded)"
    typer.echo(f"{reply.name}: {reply.kind} program on {reply.backend}, {state}{signer}")
    typer.echo(
        f"  measured on the node: p50 {m.latency_p50_s * 1e3:.3f} ms, "
        f"p99 {m.latency_p99_s * 1e3:.3f} ms over {m.runs} runs; "
        f"{m.energy_per_inference_j * 1e3:.4f} mJ per inference "
        f"({m.energy_kind}: {m.energy_source.removeprefix(m.energy_kind + ': ')})"
    )


def _parameter(text: str) -> tuple[str, bool | int | float | str]:
    from ganglion.models.errors import ShapeError

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ShapeError(f"--param {text!r}: give KEY=VALUE")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            continue
    return key, raw


def infer(
    to: str = typer.Option(..., "--to", help=TO_HELP),
    model: str = typer.Option(..., "--model", help="Model name on the node."),
    inputs: list[str] = typer.Option(
        ..., "--input", help="IN.npy (one input), IN.npz (by name) or NAME=IN.npy (repeat)."
    ),
    params: list[str] = typer.Option(
        [], "--param", help="Request parameter KEY=VALUE, e.g. sequence_id=7 (repeat)."
    ),
    output: Path | None = typer.Option(None, "--output", help="OUT.npy or OUT.npz."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    token_file: Path | None = typer.Option(None, "--token-file", help=TOKEN_HELP),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help=CA_HELP),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Client certificate (mTLS)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Client key (mTLS)."),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Deadline in seconds."),
) -> None:
    """Send arrays to a node's model (KServe v2 ModelInfer) and save or show the outputs."""
    import asyncio

    from ganglion.models.errors import ShapeError
    from ganglion.runtime.cli.arrays import (
        check_output_path,
        describe_outputs,
        input_paths,
        read_inputs,
        write_outputs,
    )
    from ganglion.runtime.serving.client import infer_request, response_parameters
    from ganglion.runtime.serving.kserve_tensors import response_arrays

    if output is not None:
        check_output_path(output, force, reads=input_paths(inputs))
    arrays = read_inputs(inputs)
    parameters = dict(_parameter(p) for p in params)

    async def call() -> Any:
        async with _client(to, token_file, tls_ca, tls_cert, tls_key, timeout_s) as client:
            named = arrays
            if not isinstance(named, dict):
                specs = (await client.metadata(model)).inputs
                if len(specs) != 1:
                    names = ", ".join(s.name for s in specs)
                    raise ShapeError(f"model {model!r} takes several inputs ({names}); name them")
                named = {specs[0].name: named}
            request = infer_request(model, named, parameters=parameters)
            return await client.model_infer(request)

    response = asyncio.run(call())
    outputs = response_arrays(response)
    for key, value in response_parameters(response).items():
        typer.echo(f"{key}: {value}")
    if output is None:
        typer.echo(describe_outputs(outputs))
        return
    write_outputs(outputs, output, force)
    typer.echo(f"{describe_outputs(outputs)} written to {output}")


def sign(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    key: Path = typer.Option(..., "--key", help="EC private key (PEM, unencrypted)."),
    signature: Path | None = typer.Option(
        None, "--signature", help="Where to write it (default: NAME.sig beside the bundle)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing file at the signature's path."
    ),
) -> None:
    """Sign a bundle's files with OpenSSF model-signing (EC key, offline)."""
    from ganglion.runtime.serving.signing import read_signature, sign_bundle

    path = sign_bundle(bundle, key, signature, force)
    info = read_signature(path)
    typer.echo(f"{path}: {len(info.files)} files signed by key {info.key_fingerprint}")


def register(app: typer.Typer) -> None:
    """Add ``deploy``, ``infer`` and ``sign`` to the CLI."""
    app.command("deploy")(deploy)
    app.command("infer")(infer)
    app.command("sign")(sign)
