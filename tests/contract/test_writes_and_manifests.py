"""No user data lost or mixed in: atomic bundle and output writes, --force replacing as a whole,
bundles holding exactly their listed files; every manifest field range-checked by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.deployable import Deployable
from ganglion.models.errors import BundleError, GanglionError
from ganglion.runtime.atomic import TargetExists
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli import invoke, main


@pytest.fixture(scope="module")
def program() -> Deployable:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2)).eval()
    calib = np.random.default_rng(0).uniform(0, 1, (16, 5)).astype(np.float32)
    return convert_spiking(model, calib, None, SpikingOptions(timesteps=4))


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return int(done.value.code or 0), capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_existing_folder_is_refused_and_untouched(program: Deployable, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(GanglionError, match="already exists; choose a new path or pass --force"):
        save_bundle(program, target)
    assert _snapshot(target) == {"notes.txt": b"precious"}


def test_force_replaces_an_old_bundle_as_a_whole_and_never_merges(
    program: Deployable, tmp_path: Path
) -> None:
    target = save_bundle(program, tmp_path / "b")
    old = {p.name: p.stat().st_ino for p in target.iterdir()}
    save_bundle(program, target, force=True)
    manifest = json.loads((target / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {p.name for p in target.iterdir()} - {"manifest.json"}
    assert all(old[p.name] != p.stat().st_ino for p in target.iterdir())  # new files, not merged


@pytest.mark.parametrize("change", ["notes", "lookalike"])
def test_force_never_replaces_a_bundle_holding_more_than_its_files_or_a_lookalike(
    program: Deployable, tmp_path: Path, change: str
) -> None:
    """A bundle the user added notes to, or a web app's folder with its own manifest.json
    and config.json, is not an old output: --force refuses it and it keeps every file."""
    target = save_bundle(program, tmp_path / "b")
    if change == "notes":
        (target / "NOTES.txt").write_text("mine")
    else:
        for f in list(target.iterdir()):
            f.unlink()
        (target / "manifest.json").write_text('{"name": "my-pwa"}')
        (target / "config.json").write_text("{}")
        (target / "NOTES.txt").write_text("mine")
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(TargetExists, match="is a folder that is not a Ganglion bundle as written"):
        save_bundle(program, target, force=True)
    assert sorted(p.name for p in target.iterdir()) == before
    assert (target / "NOTES.txt").read_text() == "mine"


def test_force_never_replaces_a_folder_that_is_not_a_bundle(
    program: Deployable, tmp_path: Path, one_line_error
) -> None:
    """``-o ~ --force`` replaced a whole home folder with a bundle: --force replaces files and
    old bundles only, and a folder of the user's keeps everything in it."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "settings").write_text("mine")
    (home / "manifest.json").write_text("{}")  # half a bundle is not one
    with pytest.raises(TargetExists, match="is a folder that is not a Ganglion bundle"):
        save_bundle(program, home, force=True)
    assert (home / ".config" / "settings").read_text() == "mine"
    assert sorted(p.name for p in home.iterdir()) == [".config", "manifest.json"]
    bundle = save_bundle(program, tmp_path / "b")
    code, _, err = invoke("quantize", str(bundle), "-o", str(home), "--force")
    one_line_error(code, err, str(home), "not a Ganglion bundle")
    assert (home / ".config" / "settings").read_text() == "mine"


def test_failed_save_leaves_nothing_behind(
    program: Deployable, tmp_path: Path, monkeypatch
) -> None:
    from ganglion.runtime.kinds.spiking import SpikingKind

    def broken(self, deployable):  # noqa: ANN001, ANN202
        def write(d, p):  # noqa: ANN001, ANN202
            raise RuntimeError("disk full")

        return {"graph.nir": write}

    monkeypatch.setattr(SpikingKind, "artifact_writers", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_bundle(program, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []


def test_unlisted_file_in_a_bundle_is_refused(program: Deployable, tmp_path: Path) -> None:
    folder = save_bundle(program, tmp_path / "b")
    (folder / "big.bin").write_bytes(b"\0" * 100)
    with pytest.raises(BundleError, match="files the manifest does not list: big.bin"):
        load_bundle(folder)


def test_failed_import_over_an_existing_bundle_keeps_it(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    before = _snapshot(folder)
    (tmp_path / "bad.nir").write_bytes(b"not hdf5")
    code, err = _cli(["import-nir", tmp_path / "bad.nir", "-o", folder, "--force"], capsys)
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1
    assert _snapshot(folder) == before
    load_bundle(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "bad.nir"]


def test_run_output_is_written_exactly_as_given(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    (tmp_path / "precious.txt").write_text("keep")
    code, err = _cli(
        ["run", folder, "--input", tmp_path / "x.npy", "--output", tmp_path / "precious.txt"],
        capsys,
    )
    assert code != 0 and "must end in .npy (one output) or .npz" in err
    assert (tmp_path / "precious.txt").read_text() == "keep"
    assert not (tmp_path / "precious.txt.npy").exists()
    out = tmp_path / "y.npy"
    assert _cli(["run", folder, "--input", tmp_path / "x.npy", "--output", out], capsys)[0] == 0
    code, err = _cli(["run", folder, "--input", tmp_path / "x.npy", "--output", out], capsys)
    assert code != 0 and "already exists" in err
    assert (
        _cli(["run", folder, "--input", tmp_path / "x.npy", "--output", out, "--force"], capsys)[0]
        == 0
    )
    assert np.load(out).shape == (2, 2)


def test_outputs_are_readable_as_the_umask_allows(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    previous = os.umask(0o027)
    try:
        args = ["run", folder, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"]
        assert _cli(args, capsys)[0] == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "y.npy").stat().st_mode & 0o777 == 0o640  # not a temporary file's 0600


def test_float64_inputs_beyond_float32_are_refused_in_one_line(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    x = np.zeros((2, 5))
    x[1, 3] = 1e300
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    code, err = _cli(["run", folder, "--input", tmp_path / "x.npy", "--output", out], capsys)
    assert code != 0 and err.count("\n") == 1, err  # one line, no overflow warning before it
    assert "magnitude 1e+300, beyond float32's range" in err and not out.exists()


def test_weights_of_the_wrong_shape_are_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tampered
) -> None:
    from safetensors.torch import load_file, save_file

    from ganglion.models.sequence import sequence_model_class
    from ganglion.models.sequence.program import sequence_deployable

    cls = sequence_model_class("gla")
    model = cls.from_config({**cls().to_config(), "d_model": 16, "n_layers": 1})
    bundle = save_bundle(sequence_deployable(model), tmp_path / "gla")

    def shrink(copy: Path) -> None:
        tensors = load_file(copy / "weights.safetensors")
        tensors["embed.weight"] = tensors["embed.weight"][:100].clone()
        save_file(tensors, copy / "weights.safetensors")

    bad = tampered(bundle, tmp_path, edit=shrink)
    code, err = _cli(["generate", bad, "--prompt", "hi", "--max-tokens", "2"], capsys)
    assert code != 0 and err.count("\n") == 1, err
    assert "size mismatch for embed.weight" in err and "weights.safetensors" in err


def test_named_inputs_and_npz_outputs_from_the_command_line(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    x = np.random.default_rng(1).random((3, 5), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "in.npz", input=x)
    for spec in (f"input={tmp_path / 'x.npy'}", str(tmp_path / "in.npz")):
        out = tmp_path / f"out{len(spec)}.npz"
        assert _cli(["run", folder, "--input", spec, "--output", out], capsys)[0] == 0
        np.testing.assert_array_equal(np.load(out)["output"], load_bundle_run(folder, x))
    code, err = _cli(
        ["run", folder, "--input", f"nope={tmp_path / 'x.npy'}", "--output", tmp_path / "z.npy"],
        capsys,
    )
    assert code != 0 and "unknown input 'nope'; the program takes input" in err


def load_bundle_run(folder: Path, x: np.ndarray) -> np.ndarray:
    from ganglion.runtime import load

    return load(folder).run(x)


def test_export_into_the_bundle_itself_is_refused(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    before = _snapshot(folder)
    code, err = _cli(["export", folder, "--onnx", folder / "model.onnx", "--force"], capsys)
    assert code != 0 and "inside the bundle" in err
    assert _snapshot(folder) == before


def test_force_never_replaces_what_the_command_reads(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    before = _snapshot(folder)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 5), np.float32))
    x_bytes = x.read_bytes()
    attempts = [
        ["quantize", folder, "-o", folder, "--force"],  # the bundle it quantizes
        ["quantize", folder, "-o", tmp_path, "--force"],  # a folder holding it
        ["export", folder, "--nir", folder, "--force"],
        ["run", folder, "--input", x, "--output", x, "--force"],
        ["run", folder, "--input", f"input={x}", "--output", x, "--force"],
    ]
    for args in attempts:
        code, err = _cli(args, capsys)
        assert code != 0 and "is read by this command" in err, args
        assert len(err.strip().splitlines()) == 1, err
    assert _snapshot(folder) == before
    assert x.read_bytes() == x_bytes
    # a different path is still written, and --force still replaces an old output
    out = tmp_path / "y.npy"
    out.write_bytes(b"old")
    assert _cli(["run", folder, "--input", x, "--output", out, "--force"], capsys)[0] == 0
    assert np.load(out).shape == (2, 2)


def test_force_never_replaces_a_device_or_a_pipe(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    pipe = tmp_path / "pipe.npy"
    os.mkfifo(pipe)
    args = ["run", folder, "--input", tmp_path / "x.npy", "--output", pipe, "--force"]
    code, err = _cli(args, capsys)
    assert code != 0 and "is a device, pipe or socket" in err
    assert pipe.is_fifo()


def test_convert_refuses_to_replace_its_source_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    archive = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 5),)), archive)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.zeros((4, 5), np.float32))
    sources = {p: p.read_bytes() for p in (archive, calib)}
    for target in (archive, calib):
        args = ["convert", "spiking", archive, "--calib", calib, "-o", target, "--force"]
        code, err = _cli(args, capsys)
        assert code != 0 and f"{target} is read by this command" in err
    assert {p: p.read_bytes() for p in sources} == sources


@pytest.mark.parametrize(
    "edit, field",
    [
        ({"time": {"timesteps": 10**9}}, "manifest.time.timesteps"),
        ({"time": {"dt": 0}}, "manifest.time.dt"),
        ({"time": {"dt": -1e-4}}, "manifest.time.dt"),
        ({"time": {"seed": -3}}, "manifest.time.seed"),
        ({"kind": "quantum"}, "manifest.kind"),
        ({"numerics": "float8"}, "manifest.numerics"),
        ({"format_version": "one"}, "manifest.format_version"),
        ({"inputs": [{"name": "input", "shape": [-1, "5"], "dtype": "float32"}]}, "shape"),
        ({"inputs": [{"name": "input", "shape": [-1, 5], "dtype": "complex"}]}, "dtype"),
        ({"inputs": [{"name": "input", "shape": [-1, 1 << 30], "dtype": "float32"}]}, "shape"),
        ({"outputs": []}, "manifest.outputs"),
    ],
    ids=[
        "timesteps",
        "dt-zero",
        "dt-negative",
        "seed",
        "kind",
        "numerics",
        "version",
        "shape-string",
        "dtype",
        "shape-huge",
        "no-outputs",
    ],
)
def test_manifest_fields_are_range_checked_by_name(
    program: Deployable, tmp_path: Path, edit: dict, field: str
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    manifest = json.loads((folder / "manifest.json").read_text())
    for key, value in edit.items():
        manifest[key] = {**manifest[key], **value} if isinstance(value, dict) else value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=field.replace(".", "\\.")) as err:
        load_bundle(folder)
    assert "manifest.json" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "path",
    ["/etc/member", "../sibling", "members/../../outside", "C:\\member", "members\\..\\..\\x"],
    ids=["absolute", "parent", "parent-inside", "drive", "backslash-parent"],
)
def test_member_path_outside_the_bundle_is_refused_naming_the_field(
    program: Deployable, tmp_path: Path, path: str
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["members"] = [{"name": "expert", "sha256": "0" * 64, "path": path}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        BundleError, match=r"manifest\.members 'expert' path must be relative"
    ) as err:
        load_bundle(folder)
    assert "manifest.json" in str(err.value) and "\n" not in str(err.value)


def test_member_path_inside_the_bundle_is_accepted() -> None:
    from ganglion.models.manifest import MemberRef

    assert MemberRef("expert", "0" * 64, "experts/a..b").path == "experts/a..b"


def test_non_finite_json_numbers_are_refused(program: Deployable, tmp_path: Path) -> None:
    folder = save_bundle(program, tmp_path / "b")
    text = (folder / "manifest.json").read_text().replace('"dt": 0.0001', '"dt": NaN')
    (folder / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="NaN is not a JSON number"):
        load_bundle(folder)


def test_reading_a_tar_bundle_leaves_no_temporary_folder(
    program: Deployable, tmp_path: Path, monkeypatch
) -> None:
    tar = save_bundle(program, tmp_path / "b.tar")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    from ganglion.runtime import load

    load(tar).run(np.zeros((1, 5), np.float32))
    load_bundle(tar)
    assert os.listdir(scratch) == []


def test_nan_calibration_and_bad_labels_are_refused() -> None:
    from ganglion.models.errors import ConversionError

    model = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = np.random.default_rng(0).random((16, 5), dtype=np.float32)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConversionError, match=r"NaN or infinity \(first at index \(3, 1\)\)"):
        convert_spiking(model, bad)
    for labels, message in (
        (np.zeros(15, int), "must be \\[16\\]"),
        (np.zeros(16), "must be integers"),
        (-np.ones(16, int), "must be >= 0"),
    ):
        with pytest.raises(ConversionError, match=message):
            convert_spiking(model, x, labels)


@pytest.mark.parametrize("dt", [0.0, -1e-4, float("nan"), float("inf")])
def test_import_nir_refuses_a_bad_dt(program: Deployable, tmp_path: Path, dt: float) -> None:
    from ganglion.converters.nir_graph import read_nir, write_nir
    from ganglion.models.errors import NIRError

    write_nir(program.module.graph, tmp_path / "g.nir")
    with pytest.raises(NIRError, match="--dt must be a positive finite number"):
        read_nir(tmp_path / "g.nir", dt)


def test_import_nir_refuses_non_finite_parameters(program: Deployable, tmp_path: Path) -> None:
    import nir

    from ganglion.converters.nir_graph import read_nir, to_nir
    from ganglion.models.errors import NIRError

    graph = to_nir(program.module.graph)
    first = next(n for n, node in graph.nodes.items() if isinstance(node, nir.Affine))
    graph.nodes[first].weight[0, 0] = np.inf
    nir.write(str(tmp_path / "g.nir"), graph)
    with pytest.raises(NIRError, match=f"node {first!r}: weight holds NaN or infinity"):
        read_nir(tmp_path / "g.nir")


@pytest.mark.parametrize("state", ["v.", "decode"])
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_fresh_state_other_than_the_programs_is_refused(
    program: Deployable, tmp_path: Path, tampered, state: str, backend: str
) -> None:
    """``step`` starts from initial_state.safetensors and ``run`` from the weights' v_init (and
    zeros): a file that says otherwise is refused at load, on every backend."""
    from safetensors.numpy import load_file, save_file

    from ganglion.runtime import load

    folder = save_bundle(program, tmp_path / "b")

    def edit(copy: Path) -> None:
        values = load_file(copy / "initial_state.safetensors")
        name = next(k for k in values if k.startswith(state))
        values[name] = values[name] + np.float32(0.25)
        save_file(values, copy / "initial_state.safetensors")

    bad = tampered(folder, tmp_path, edit=edit)
    with pytest.raises(BundleError, match=r"initial_state\.safetensors: state '" + state):
        load(bad, backend=backend)
    assert load(folder, backend=backend).init_state(1)  # the untouched bundle loads


def test_import_nir_bounds_each_node_before_allocating(tmp_path: Path) -> None:
    """A 15 KB graph declaring a [6000, 6000] input, which its scalar-parameter neuron takes,
    is refused by its size before anything of that size is allocated."""
    import nir

    from ganglion.converters.nir_graph import MAX_NODE_ELEMENTS, read_nir
    from ganglion.models.errors import NIRError

    big = np.array([6000, 6000])
    neuron = nir.IF(r=np.array(1.0), v_threshold=np.array(1.0))
    nodes = {"in": nir.Input(input_type=big), "if": neuron, "out": nir.Output(output_type=big)}
    graph = nir.NIRGraph(nodes=nodes, edges=[("in", "if"), ("if", "out")], type_check=False)
    path = tmp_path / "big.nir"
    nir.write(str(path), graph, compression=None)
    assert path.stat().st_size < 100_000
    with pytest.raises(
        NIRError, match=f"36000000 values per sample .* limit is {MAX_NODE_ELEMENTS}"
    ):
        read_nir(path, type_check=False)


def test_sequence_time_chunk_prefills_the_prompt_in_calls_of_that_many_tokens() -> None:
    """``time.chunk`` = 4 prefills a 10-token prompt as 4 + 4 + 2 tokens, each call continuing
    the last one's state: the same last logits and greedy tokens as one whole-prompt call."""
    import dataclasses

    from ganglion.models.sequence import sequence_model_class
    from ganglion.models.sequence.program import sequence_deployable
    from ganglion.runtime import load
    from ganglion.runtime.generation import Sampling, generate

    torch.manual_seed(0)
    cls = sequence_model_class("rwkv")
    model = cls.from_config({**cls().to_config(), "d_model": 16, "n_layers": 1})
    with torch.no_grad():
        for p in model.parameters():  # fresh blocks are near the identity
            p.add_(0.3 * torch.randn(p.shape))
    whole = sequence_deployable(model)
    time = dataclasses.replace(whole.manifest.time, chunk=4)
    chunked = Deployable(whole.module, dataclasses.replace(whole.manifest, time=time), whole.config)
    prompt = list(range(10, 20))
    results = []
    for deployable in (whole, chunked):
        session, calls = load(deployable), []
        prefill = session.prefill

        def spy(inputs, state, prefill=prefill, calls=calls):
            outputs, new_state = prefill(inputs, state)
            calls.append((inputs["ids"].shape[1], outputs["logits"][0, -1].copy()))
            return outputs, new_state

        session.prefill = spy
        results.append((list(generate(session, prompt, Sampling(max_tokens=6))), calls))
    (whole_tokens, whole_calls), (chunked_tokens, chunked_calls) = results
    assert [n for n, _ in whole_calls] == [10] and [n for n, _ in chunked_calls] == [4, 4, 2]
    np.testing.assert_allclose(chunked_calls[-1][1], whole_calls[-1][1], atol=1e-5, rtol=0)
    assert chunked_tokens == whole_tokens and len(set(whole_tokens)) > 1


def test_every_bundle_file_has_the_same_mode_and_a_linked_manifest_is_refused(
    tmp_path: Path,
) -> None:
    """safetensors writes its files 0600, hiding the weights from a service user that can read
    config.json; a manifest.json that is a link (to anywhere) is not a bundle's own file."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    calib = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    bundle = Path(save_bundle(convert_spiking(model.eval(), calib), tmp_path / "b"))
    modes = {f.name: f.stat().st_mode & 0o777 for f in bundle.iterdir() if f.is_file()}
    assert len(set(modes.values())) == 1 and modes["weights.safetensors"] & 0o044, modes
    linked = tmp_path / "linked"
    linked.mkdir()
    for f in bundle.iterdir():
        (linked / f.name).write_bytes(f.read_bytes())
    (linked / "manifest.json").unlink()
    (linked / "manifest.json").symlink_to(bundle / "manifest.json")
    with pytest.raises(BundleError, match="manifest.json: not a regular file"):
        load_bundle(linked)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m["inputs"][0].__setitem__("\n", 1), "manifest.inputs[0] has no field '\\n'"),
        (lambda m: m["outputs"][0].pop("shape"), "manifest.outputs[0] lacks field 'shape'"),
        (lambda m: m["time"].__setitem__("extra", 1), "manifest.time has no field 'extra'"),
    ],
    ids=["newline-key", "missing", "time"],
)
def test_a_nested_field_a_manifest_should_not_have_is_named_in_one_line(
    program: Deployable, tmp_path: Path, edit, words
) -> None:
    bundle = save_bundle(program, tmp_path / "b")
    data = json.loads((bundle / "manifest.json").read_text())
    edit(data)
    from ganglion.models.manifest import Manifest

    with pytest.raises(BundleError) as refused:
        Manifest.from_dict(data)
    assert words in str(refused.value) and "\n" not in str(refused.value)
