"""A hostile or careless user at the command line, with files the tests craft: outputs never
land inside a bundle or over a file without --force, NaN weights and empty or byte-swapped
arrays are refused by name, and every size a user can type is bounded before anything runs."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file, save_file
from torch import nn

from ganglion.converters.exported_archive import load_exported
from ganglion.converters.onnx_file import load_onnx
from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.device.profiles.schema import ProfileError, profile_from_dict
from ganglion.models.deployable import Deployable
from ganglion.models.errors import ConversionError, ShapeError
from ganglion.models.events import make_events
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking.network import SpikingNetwork
from ganglion.runtime.atomic import TargetExists, check_target
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import invoke, main
from ganglion.runtime.cli.arrays import read_npy, read_npz
from ganglion.runtime.generation import GenerationError, Sampling
from ganglion.runtime.selection.problem import read_problem, write_problem
from ganglion.runtime.selection.synthetic import synthetic_problem

JETSON = Path(__file__).parents[2] / "device" / "profiles" / "jetson-orin-nano-8gb.json"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(18, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small spiking bundle taking [batch, 2, 3, 3] (3 classes)."""
    calib = np.random.default_rng(0).uniform(0, 1, (16, 2, 3, 3)).astype(np.float32)
    program = convert_spiking(_model(), calib, None, SpikingOptions(timesteps=4))
    return save_bundle(program, tmp_path_factory.mktemp("hostile") / "b")


@pytest.fixture(scope="module")
def event_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same network reading a 3x3 event sensor, binned into 4 frames."""
    calib = np.random.default_rng(0).uniform(0, 1, (16, 2, 3, 3)).astype(np.float32)
    direct = convert_spiking(_model(), calib, None, SpikingOptions(timesteps=4))
    binning = {"width": 3, "height": 3, "channels": 2, "n_time_bins": 4}
    time = SpikingTime(4, encoding="events", decoding="membrane", events=binning)
    network = SpikingNetwork(direct.module.graph, time)
    program = Deployable(network, spiking_manifest(direct.module.graph, time), direct.config)
    return save_bundle(program, tmp_path_factory.mktemp("hostile") / "events")


def _cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return int(done.value.code or 0), capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_line(code: int, err: str, *parts: str) -> None:
    assert code != 0 and err.count("\n") == 1 and err.startswith("error: "), err
    for part in parts:
        assert part in err, err


# ---- group 2: nothing written inside a bundle, over a file, or over the current folder ----------


def test_outputs_inside_a_bundle_are_refused_at_any_depth(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 3, 3), np.float32))
    (tmp_path / "link.npy").symlink_to(bundle / "weights.safetensors")
    before = _snapshot(bundle)
    attempts = [
        ["run", bundle, "--input", tmp_path / "x.npy", "--output", bundle / "y.npy"],
        [
            "run",
            bundle,
            "--input",
            tmp_path / "x.npy",
            "--output",
            tmp_path / "link.npy",
            "--force",
        ],
        ["export", bundle, "--nir", bundle / "sub" / "graph.nir", "--force"],
        ["import-nir", tmp_path / "any.nir", "-o", bundle / "imported"],
    ]
    for args in attempts:
        code, err = _cli(args, capsys)
        _one_line(code, err, "inside the bundle")
    assert _snapshot(bundle) == before


def test_force_never_replaces_the_current_folder(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("mine")
    monkeypatch.chdir(work)
    for target in (Path("."), Path(".."), work):
        with pytest.raises(TargetExists, match="holds the current folder"):
            check_target(target, force=True)
    assert (work / "thesis.tex").read_text() == "mine"


def test_an_output_below_a_file_is_refused_naming_that_file(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("precious")
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 3, 3), np.float32))
    attempts = [
        ["run", bundle, "--input", tmp_path / "x.npy", "--output", mine / "y.npy"],
        ["export", bundle, "--onnx", mine / "deep" / "m.onnx"],
        ["train", "lm", "--arch", "gla", "--steps", "1", "-o", mine / "lm"],
    ]
    for args in attempts:
        code, err = _cli(args, capsys)
        _one_line(code, err, f"{mine} is a file, not a folder")
    assert mine.read_text() == "precious"


def test_select_dump_problem_keeps_an_existing_file_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = write_problem(
        synthetic_problem(np.random.default_rng(0), 3, 5, "trained"), tmp_path / "p.json"
    )
    mine = tmp_path / "notes.txt"
    mine.write_text("precious")
    select = ["select", "--problem", problem, "--energy-budget", "1000", "--latency-budget", "1e6"]
    code, err = _cli([*select, "--dump-problem", mine], capsys)
    _one_line(code, err, "notes.txt", "--force")
    assert mine.read_text() == "precious"
    code, _ = _cli([*select, "--dump-problem", mine, "--force"], capsys)
    assert code == 0 and read_problem(mine).experts == read_problem(problem).experts


def test_profile_plot_refuses_an_existing_file_or_an_odd_suffix(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "chart.png"
    mine.write_bytes(b"precious")
    for plot, part in ((mine, "--force"), (tmp_path / "chart.txt", "must end in")):
        code, err = _cli(["profile", bundle, "--simulate", "--plot", plot], capsys)
        _one_line(code, err, part)
    assert mine.read_bytes() == b"precious" and not (tmp_path / "chart.txt").exists()


def test_write_problem_as_a_library_call_still_replaces(tmp_path: Path) -> None:
    problem = synthetic_problem(np.random.default_rng(1), 3, 5, "trained")
    target = tmp_path / "p.json"
    target.write_text("old")
    write_problem(problem, target)
    assert read_problem(target).experts == problem.experts
    with pytest.raises(TargetExists, match="--force"):
        write_problem(problem, target, force=False)


# ---- groups 1 and 5: NaN weights, empty and byte-swapped arrays --------------------------------


def test_nan_weights_in_a_pt2_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model[1].weight[2, 5] = float("nan")
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.zeros(2, 2, 3, 3),)), buffer)
    path = tmp_path / "nan.pt2"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(
        ConversionError, match=r"nan\.pt2: tensor '1\.weight' holds NaN at index \(2, 5\)"
    ):
        load_exported(path)


def _onnx_gemm(path: Path, weight: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_nan_weights_in_an_onnx_model_are_refused_but_infinity_passes(tmp_path: Path) -> None:
    weight = np.ones((3, 4), np.float32)
    weight[1, 2] = np.nan
    with pytest.raises(ConversionError, match=r"nan\.onnx: tensor 'w' holds NaN at index \(1, 2\)"):
        load_onnx(_onnx_gemm(tmp_path / "nan.onnx", weight))
    weight[1, 2] = -np.inf  # attention masks hold -inf
    assert load_onnx(_onnx_gemm(tmp_path / "mask.onnx", weight)).graph.initializer[0].name == "w"


def test_nan_in_a_constant_node_or_a_subgraph_is_refused(tmp_path: Path) -> None:
    weight = np.ones((3, 4), np.float32)
    weight[2, 1] = np.nan
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    constant = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weight, "c"))
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    path = tmp_path / "constant.onnx"
    onnx.save(helper.make_model(helper.make_graph([constant, gemm], "g", [x], [y])), str(path))
    with pytest.raises(
        ConversionError, match=r"constant\.onnx: tensor 'Constant\.value' holds NaN"
    ):
        load_onnx(path)
    # the same weight as an initializer of an If branch
    branch = helper.make_graph(
        [helper.make_node("Gemm", ["x", "wb"], ["yb"], transB=1)],
        "branch",
        [],
        [helper.make_tensor_value_info("yb", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "wb")],
    )
    flag = numpy_helper.from_array(np.array(True), "flag")
    choose = helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch)
    path = tmp_path / "branch.onnx"
    graph = helper.make_graph([choose], "g", [x], [y], [flag])
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(
        ConversionError, match=r"branch\.onnx: tensor 'wb' holds NaN at index \(2, 1\)"
    ):
        load_onnx(path)


def _put_nan(path: Path, tensor: str, index: int) -> None:
    tensors = load_file(path)
    tensors[tensor][index] = np.nan
    save_file(tensors, path)


@pytest.mark.parametrize(
    ("file_name", "tensor", "backend"),
    [
        ("weights.safetensors", "affine_1.weight", "torch"),
        ("weights.safetensors", "relu_2.threshold", "torch"),
        ("initial_state.safetensors", "v.relu_2", "onnxruntime"),  # the state ORT starts from
    ],
)
def test_nan_in_a_bundles_tensors_is_refused_naming_file_and_tensor(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tampered: Callable[..., Path],
    file_name: str,
    tensor: str,
    backend: str,
) -> None:
    nan = tampered(bundle, tmp_path, edit=lambda copy: _put_nan(copy / file_name, tensor, 2))
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 3, 3), np.float32))
    args = ["run", nan, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"]
    code, err = _cli([*args, "--backend", backend], capsys)
    _one_line(code, err, f"{file_name}: tensor {tensor!r} holds NaN at index (2", str(nan))
    assert not (tmp_path / "y.npy").exists()


def _put_nan_in_onnx(path: Path) -> str:
    """NaN into the first float initializer of the ONNX file at ``path``; its name."""
    model = onnx.load(str(path))
    first = next(t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)
    values = numpy_helper.to_array(first).copy()
    values.flat[0] = np.nan
    first.CopyFrom(numpy_helper.from_array(values, first.name))
    onnx.save(model, str(path))
    return first.name


def test_nan_in_a_bundles_onnx_graph_is_refused_on_onnxruntime(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tampered: Callable[..., Path],
) -> None:
    names = []
    nan = tampered(
        bundle, tmp_path, edit=lambda c: names.append(_put_nan_in_onnx(c / "model.onnx"))
    )
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 3, 3), np.float32))
    args = ["run", nan, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"]
    code, err = _cli([*args, "--backend", "onnxruntime"], capsys)
    _one_line(code, err, f"model.onnx: tensor {names[0]!r} holds NaN at index")
    assert not (tmp_path / "y.npy").exists()


def test_empty_arrays_are_refused_naming_the_file(tmp_path: Path) -> None:
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), np.float32))
    np.savez(tmp_path / "calib.npz", x=np.zeros((0, 64), np.float32))
    with pytest.raises(ShapeError, match=r"empty\.npy: holds no values \(shape \[0, 64\]\)"):
        read_npy(tmp_path / "empty.npy")
    with pytest.raises(ShapeError, match=r"calib\.npz: array 'x': holds no values"):
        read_npz(tmp_path / "calib.npz")


def test_quantize_refuses_nan_calibration_naming_file_and_index(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.zeros((4, 2, 3, 3), np.float32)
    x[2, 1, 0, 2] = np.inf
    np.savez(tmp_path / "calib.npz", x=x)
    args = ["quantize", bundle, "--target", "loihi2", "-o", tmp_path / "q", "--calib"]
    code, err = _cli([*args, tmp_path / "calib.npz"], capsys)
    _one_line(code, err, "calib.npz: array 'x' holds inf at index (2, 1, 0, 2)")
    assert not (tmp_path / "q").exists()


def test_byte_swapped_arrays_are_read_in_native_order(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "big.npy", values.astype(">f4"))
    np.savez(tmp_path / "big.npz", x=values.astype(">f4"))
    for array in (read_npy(tmp_path / "big.npy"), read_npz(tmp_path / "big.npz")["x"]):
        assert array.dtype.isnative and np.array_equal(array, values)


# ---- group 6: errors name the file ----------------------------------------------------------


def test_eval_errors_name_the_data_file(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.random.default_rng(1).uniform(0, 1, (5, 2, 3, 3)).astype(np.float32)
    np.savez(tmp_path / "short.npz", x=x, y=np.zeros(2, np.int64))
    nan = x.copy()
    nan[3, 1, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan, y=np.zeros(5, np.int64))
    code, err = _cli(["eval", bundle, "--data", tmp_path / "short.npz"], capsys)
    _one_line(code, err, "short.npz: labels must be [5], got [2]")
    code, err = _cli(["eval", bundle, "--data", tmp_path / "nan.npz"], capsys)
    _one_line(code, err, "nan.npz: input 'input' holds nan at index (3, 1, 2, 0)")


def test_run_errors_name_the_input_file(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = np.random.default_rng(2).uniform(0, 1, (4, 2, 3, 3)).astype(np.float32)
    x[2, 0, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    np.save(tmp_path / "flat.npy", x.reshape(4, 18))
    for name, expected in [
        ("nan.npy", "nan.npy: input 'input' holds nan at index (2, 0, 1, 1)"),
        ("flat.npy", "flat.npy: input 'input' must be"),
    ]:
        code, err = _cli(
            ["run", bundle, "--input", tmp_path / name, "--output", tmp_path / "y.npy"], capsys
        )
        _one_line(code, err, expected)
        assert not (tmp_path / "y.npy").exists()


def test_a_folder_a_fifo_or_nothing_given_as_a_file_is_named_as_such(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)  # opening it would block: it must be refused before any read
    for given, expected in [
        (tmp_path, "is a folder, not a file"),
        (fifo, "is not a regular file"),
        (tmp_path / "absent.npy", "no such file"),
    ]:
        code, err = _cli(["run", bundle, "--input", given, "--output", tmp_path / "y.npy"], capsys)
        _one_line(code, err, f"{given}: {expected}")
        budgets = ["--energy-budget", "1", "--latency-budget", "5"]
        code, err = _cli(["select", "--problem", given, *budgets], capsys)
        _one_line(code, err, f"{given}: {expected}")


def test_event_stream_errors_name_the_stream_file(
    event_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = tmp_path / "stream.npy"
    np.save(stream, make_events(x=[0, 7, 1], y=[0, 1, 2], t=[0, 10, 20], p=[1, 0, 1]))
    code, err = _cli(
        ["run", event_bundle, "--input", stream, "--output", tmp_path / "y.npy"], capsys
    )
    _one_line(code, err, "stream.npy: event 1 has x=7, outside the sensor's width 3")
    assert not (tmp_path / "y.npy").exists()


def test_a_tar_made_from_above_the_bundle_says_where_the_manifest_is(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "wrapped.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(bundle, arcname=bundle.name)  # tar -cf wrapped.tar b, not tar -C b -cf ... .
    code, err = _cli(["inspect", archive], capsys)
    _one_line(code, err, "wrapped.tar: not a bundle", f"its folder {bundle.name!r} holds one")


def test_device_profile_figures_out_of_range_are_one_line(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in (("launch_overhead_s", 1e308), ("memory_bandwidth", 1e-300)):
        profile = {**json.loads(JETSON.read_text()), "name": "evil", key: value}
        device_file = tmp_path / f"{key}.json"
        device_file.write_text(json.dumps(profile))
        args = ["profile", bundle, "--device", "evil", "--devices", device_file, "--simulate"]
        code, err = _cli(args, capsys)
        _one_line(code, err, f"{key}.json", f"{key} must be a finite number")


def test_profile_figures_are_bounded_on_both_sides() -> None:
    base = json.loads(JETSON.read_text())
    assert profile_from_dict(base, "x.json").memory_bandwidth == base["memory_bandwidth"]
    for key, value in (("memory_bandwidth", 1e31), ("memory_bandwidth", 1e-31), ("idle_w", 1e-40)):
        with pytest.raises(ProfileError, match=f"{key} must be a finite number"):
            profile_from_dict({**base, key: value}, "x.json")


# ---- group 4: sizes a user types are bounded before anything is built -------------------------


@pytest.mark.parametrize(
    "flags, part",
    [
        (["--d-model", "1000000"], "--d-model must be at least 1 and at most"),
        (["--layers", "100000"], "--layers must be at least 1 and at most"),
        (["--d-model", "2048", "--layers", "48"], "parameters, more than"),
    ],
)
def test_train_lm_sizes_are_capped_before_building(
    flags: list[str], part: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli(["train", "lm", "--arch", "gpt", "-o", tmp_path / "lm", *flags], capsys)
    _one_line(code, err, part)
    assert not (tmp_path / "lm").exists()


def test_a_negative_sampling_seed_is_named() -> None:
    with pytest.raises(GenerationError, match=r"seed must be in \[0, 2\*\*63\), got -1"):
        Sampling(seed=-1)


# ---- hostile-file review: compressed .npz, one-line errors, duplicate names --------------------


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A deflated zip of ``members`` in order (a repeated name is written twice)."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, and writes it
        for name, data in members:
            archive.writestr(name, data)
    return path


def test_a_compressed_npz_is_refused_by_its_ratio_wherever_it_is_read(
    bundle: Path, event_bundle: Path, tmp_path: Path, one_line_error: Callable[..., None]
) -> None:
    """36 MiB of zeros deflate to ~36 KB: refused before it is unpacked, for --input, --calib,
    eval data and event streams alike (the same rule as .pt2 members and HDF5 datasets)."""
    zeros = _npy_bytes(np.zeros((1 << 19, 18), np.float32))
    bomb = _zip(tmp_path / "bomb.npz", [("x.npy", zeros), ("y.npy", _npy_bytes(np.zeros(2)))])
    events = np.zeros(1 << 21, [("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "u1")])
    event_bomb = _zip(tmp_path / "events.npz", [("events.npy", _npy_bytes(events))])
    out = tmp_path / "y.npy"
    for file, args in (
        (bomb, ["run", bundle, "--input", bomb, "--output", out]),
        (bomb, ["eval", bundle, "--data", bomb]),
        (bomb, ["quantize", bundle, "--target", "loihi2", "-o", tmp_path / "q", "--calib", bomb]),
        (event_bomb, ["run", event_bundle, "--input", event_bomb, "--output", out]),
    ):
        code, _, err = invoke(*map(str, args))
        one_line_error(code, err, f"{file}: member ", "compression ratio", "compression bomb")
        assert not out.exists()


def test_small_npz_members_cannot_add_up_to_a_bomb(tmp_path: Path) -> None:
    eight_mib = _npy_bytes(np.zeros(1 << 21, np.float32))  # each under the 16 MiB floor
    path = _zip(tmp_path / "many.npz", [(f"a{i}.npy", eight_mib) for i in range(3)])
    with pytest.raises(ShapeError, match=r"many\.npz: its members together declares .* bomb"):
        read_npz(path)


def test_npz_arrays_are_read_once_even_when_byte_swapped(tmp_path: Path) -> None:
    values = np.arange(1 << 21, dtype=np.float32)  # 8 MiB
    np.savez(tmp_path / "big.npz", x=values.astype(">f4"))
    tracemalloc.start()
    try:
        array = read_npz(tmp_path / "big.npz")["x"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert array.dtype.isnative and np.array_equal(array, values)
    assert peak < 1.25 * values.nbytes, peak


def test_npz_members_are_checked_before_they_are_read(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 28, 64)}
    )
    for members, message in [
        ([("input", _npy_bytes(np.ones(3)))], "member 'input' is not an array (.npy)"),
        ([("x.npy", header.getvalue() + bytes(256))], "declares 68719476736 bytes of data"),
    ]:
        with pytest.raises(ShapeError) as info:
            read_npz(_zip(tmp_path / "odd.npz", members))
        assert str(info.value).startswith(str(tmp_path / "odd.npz")) and message in str(info.value)


def test_duplicate_npz_members_are_refused_by_name(
    bundle: Path, tmp_path: Path, one_line_error: Callable[..., None]
) -> None:
    x = np.zeros((2, 2, 3, 3), np.float32)
    dup = _zip(tmp_path / "dup.npz", [("input.npy", _npy_bytes(x)), ("input.npy", _npy_bytes(x))])
    code, _, err = invoke("run", str(bundle), "--input", str(dup), "--output", str(tmp_path / "y"))
    one_line_error(code, err, "dup.npz: two members named 'input.npy'")
    with pytest.raises(ShapeError, match="two members named 'input.npy'"):
        read_npz(dup)


def test_duplicate_keys_or_profile_names_in_a_device_file_are_refused(
    tmp_path: Path, one_line_error: Callable[..., None]
) -> None:
    profile = {**json.loads(JETSON.read_text()), "name": "evil"}
    text = json.dumps(profile)
    (tmp_path / "key.json").write_text(
        text.replace('"memory_bandwidth":', '"memory_bandwidth": 1, "memory_bandwidth":', 1)
    )
    (tmp_path / "name.json").write_text(json.dumps([profile, {**profile, "idle_w": 3.0}]))
    for name, expected in [
        ("key.json", "key 'memory_bandwidth' appears twice"),
        ("name.json", "entries 1 and 2 are both named 'evil'"),
    ]:
        code, _, err = invoke("devices", "--devices", str(tmp_path / name), "--json")
        one_line_error(code, err, name, expected)


def test_broken_evt2_and_dat_files_are_one_line_and_keep_stderr_clean(
    event_bundle: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    one_line_error: Callable[..., None],
) -> None:
    pytest.importorskip("expelliarmus", reason="'expelliarmus' not installed")
    files = {
        "garbage.raw": (b"% evt 2.0\n% end\n" + b"\x00\x00\x00\x70" * 64, "event type"),
        "cut.raw": (b"% evt 2.0\n% end\n\x01\x02\x03", "returned nothing"),
        "empty.dat": (b"", "not a readable DAT file"),
        "cut.dat": (b"% end\n\x0c\x08\x01\x02\x03", "returned nothing"),
    }
    for name, (data, expected) in files.items():
        (tmp_path / name).write_bytes(data)
        args = ["run", event_bundle, "--input", tmp_path / name, "--output", tmp_path / "y.npy"]
        code, _, err = invoke(*map(str, args))
        one_line_error(code, err, f"{tmp_path / name}: ", expected)
        assert capfd.readouterr().err == ""  # the C reader's own lines are kept off fd 2


def test_eval_data_with_a_0d_input_is_named(
    bundle: Path, tmp_path: Path, one_line_error: Callable[..., None]
) -> None:
    np.savez(tmp_path / "scalar.npz", x=np.float32(1.0), y=np.zeros(1, np.int64))
    code, _, err = invoke("eval", str(bundle), "--data", str(tmp_path / "scalar.npz"))
    one_line_error(code, err, "scalar.npz: input 'input' has shape []")


def test_selection_problem_with_a_huge_integer_or_a_lone_surrogate_names_the_field(
    tmp_path: Path, one_line_error: Callable[..., None]
) -> None:
    problem = synthetic_problem(np.random.default_rng(0), 3, 5, "trained")
    text = (write_problem(problem, tmp_path / "p.json")).read_text()
    data = json.loads(text)
    data["aggregation"]["per_expert_ms"] = 0
    digits = json.dumps(data).replace('"per_expert_ms": 0', '"per_expert_ms": ' + "9" * 5000)
    (tmp_path / "big.json").write_text(digits)
    name = data["experts"][0]["name"]
    (tmp_path / "surrogate.json").write_text(text.replace(f'"{name}"', '"\\ud800"', 1))
    budgets = ["--energy-budget", "1", "--latency-budget", "1000"]
    for file, expected in [
        ("big.json", "aggregation.per_expert_ms must be a finite number >= 0, got an integer of"),
        ("surrogate.json", "experts[0].name is not Unicode text (a lone surrogate)"),
    ]:
        code, _, err = invoke("select", "--problem", str(tmp_path / file), *budgets)
        one_line_error(code, err, f"{file}: {expected}")
        assert code == 2


def _onnx_file(path: Path, nodes: list, initializers: list, opsets: list | None = None) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), *(opsets or [])])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_onnx_runtime_failures_in_convert_are_one_line_naming_the_model(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], one_line_error: Callable[..., None]
) -> None:
    weight = numpy_helper.from_array(np.ones((64, 10), np.float32), "W")
    custom = _onnx_file(
        tmp_path / "custom.onnx",
        [
            helper.make_node("MatMul", ["input", "W"], ["h"]),
            helper.make_node("Evil", ["h"], ["output"], domain="com.evil"),
        ],
        [weight],
        [helper.make_opsetid("com.evil", 1)],
    )
    shape = numpy_helper.from_array(np.array([5, 5], np.int64), "shape")
    reshape = _onnx_file(
        tmp_path / "reshape.onnx",
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        [shape],
    )
    np.savez(tmp_path / "calib.npz", x=np.zeros((4, 64), np.float32))
    cases = [(custom, "load", "com.evil:Evil"), (reshape, "run", "Reshape node")]
    for model, what, expected in cases:
        args = ["convert", "dense", model, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "b"]
        code, _, err = invoke(*map(str, args))
        one_line_error(code, err, f"{model}: ONNX Runtime cannot {what} the graph", expected)
        assert capfd.readouterr().err == ""  # no coloured ONNX Runtime log line
    # without calibration data nothing runs, but a graph ONNX Runtime cannot load is refused
    code, _, err = invoke("convert", "dense", str(custom), "-o", str(tmp_path / "b"))
    one_line_error(code, err, f"{custom}: ONNX Runtime cannot load the graph", "com.evil:Evil")
    assert not (tmp_path / "b").exists()
    # one that loads but fails when it runs is named by its bundle, in one line
    fixed = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [5, 5])],
        [shape],
    )
    model = helper.make_model(fixed, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    code, _, err = invoke(
        "convert", "dense", str(tmp_path / "fixed.onnx"), "-o", str(tmp_path / "r")
    )
    assert code == 0, err
    np.save(tmp_path / "x.npy", np.zeros((4, 64), np.float32))
    args = ["run", tmp_path / "r", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"]
    code, _, err = invoke(*map(str, [*args, "--backend", "onnxruntime"]))
    one_line_error(code, err, f"{tmp_path / 'r'}: ONNX Runtime failed", "Reshape")
    assert capfd.readouterr().err == ""
    args = ["convert", "spiking", custom, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "b"]
    code, _, err = invoke(*map(str, args))
    one_line_error(code, err, f"{custom}: ONNX node", "(Evil) is not supported")


def test_nir_graphs_refused_after_reading_still_name_the_file(
    tmp_path: Path, one_line_error: Callable[..., None]
) -> None:
    import nir

    def graph(tau: float, width: int) -> nir.NIRGraph:
        n = abs(width)
        return nir.NIRGraph(
            nodes={
                "input": nir.Input(input_type=np.array([width])),
                "lif": nir.LIF(
                    tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n),
                    v_threshold=np.ones(n), v_reset=np.zeros(n),
                ),
                "output": nir.Output(output_type=np.array([n])),
            },
            edges=[("input", "lif"), ("lif", "output")],
            type_check=False,
        )  # fmt: skip

    nir.write(tmp_path / "inf_tau.nir", graph(np.inf, 3))
    nir.write(tmp_path / "negative.nir", graph(0.01, -3))
    for name, expected in [
        ("inf_tau.nir", "node 'lif': tau at index (0,) gives decay 1"),
        ("negative.nir", "node 'input' has shape [-3]"),
    ]:
        args = ["import-nir", tmp_path / name, "-o", tmp_path / "b", "--no-type-check"]
        code, _, err = invoke(*map(str, [*args, "--like", "snntorch"]))
        one_line_error(code, err, f"{tmp_path / name}: ", expected)
        assert not (tmp_path / "b").exists()


def test_a_batch_outside_the_exported_range_names_the_file_and_the_limit(
    tmp_path: Path, one_line_error: Callable[..., None]
) -> None:
    model = nn.Sequential(nn.Linear(64, 10)).eval()
    batch = torch.export.Dim("batch", min=2, max=8)
    program = torch.export.export(model, (torch.zeros(4, 64),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "small.pt2")
    np.savez(tmp_path / "calib.npz", x=np.zeros((16, 64), np.float32))
    args = ["convert", "dense", tmp_path / "small.pt2", "--calib", tmp_path / "calib.npz"]
    code, _, err = invoke(*map(str, [*args, "-o", tmp_path / "b"]))
    one_line_error(code, err, "small.pt2: inputs input [16, 64]", "<= 8")


def test_an_npy_header_declaring_more_than_the_file_holds_is_named(
    tmp_path: Path, one_line_error
) -> None:
    """A 16-byte file whose header declares 2**40 float32s: refused from the header, naming
    the shape (it failed as a bare 'MemoryError' before), and a header that cannot be read
    says what numpy found."""
    from ganglion.runtime.cli import invoke

    huge, cut = tmp_path / "huge.npy", tmp_path / "cut.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (2**20, 2**20)}
        )
        f.write(bytes(16))
    cut.write_bytes(b"\x93NUMPY\x02\x00\x00\x00\x00\x80{")
    for path, words in (
        (huge, ("[1048576, 1048576] float32 (4398046511104 bytes)", "holds 16 bytes")),
        (cut, ("not a readable .npy array (ValueError: ",)),
    ):
        code, _, err = invoke("run", str(tmp_path), "--input", str(path), "--output", "o.npy")
        one_line_error(code, err, str(path), *words)


def test_a_file_name_holding_a_newline_or_an_escape_stays_one_whole_line(
    tmp_path: Path, one_line_error
) -> None:
    """The error quoted the name raw: a newline cut it to 'error: ...a', an escape sequence
    reached the terminal."""
    from ganglion.runtime.cli import invoke

    folder = tmp_path / "a\nb\x1b[31m"
    folder.mkdir()
    code, _, err = invoke("inspect", str(folder))
    one_line_error(code, err, "a\ufffdb\ufffd[31m: not a bundle")
