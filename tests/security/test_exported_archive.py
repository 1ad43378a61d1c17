"""converters/exported_archive.py: hostile .pt2 archives are refused before torch sees them;
a normal archive still loads and converts."""

from __future__ import annotations

import io
import pickletools
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from ganglion.converters.exported_archive import (
    ArchiveLimits,
    check_exported_archive,
    load_exported,
)
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import ConversionError

SAMPLE = "data/sample_inputs/model.pt"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"


def pickle_attacks(craft, archive: bytes, marker: Path) -> dict[str, tuple[bytes, str]]:
    """The three routes by which torch.export.load unpickles: crafted archive and the
    member the refusal must name."""
    payloads = craft.marker_pickles(marker)

    def use_pickle(doc: dict) -> None:
        doc["config"]["0.weight"]["use_pickle"] = True

    pickled_weight = craft.edit_json(archive, WEIGHTS_CONFIG, use_pickle)
    return {
        "sample-inputs": (
            craft.rewrite_zip(archive, {SAMPLE: craft.torch_save_zip(payloads["os.system"])}),
            "data/sample_inputs/model.pt -> archive/data.pkl",
        ),
        "use-pickle-weight": (
            craft.rewrite_zip(
                pickled_weight,
                {"data/weights/weight_0": craft.torch_save_zip(payloads["builtins.exec"])},
            ),
            "data/weights/weight_0 -> archive/data.pkl",
        ),
        "legacy-weights": (
            craft.rewrite_zip(
                archive,
                {},
                add={"data/weights/model.pt": craft.torch_save_zip(payloads["subprocess"])},
            ),
            "data/weights/model.pt -> archive/data.pkl",
        ),
    }


ROUTES = ["sample-inputs", "use-pickle-weight", "legacy-weights"]


@pytest.mark.parametrize("route", ROUTES)
def test_crafted_pickle_is_refused_naming_the_member(craft, route, mlp_archive_bytes, tmp_path):
    marker = tmp_path / "marker"
    crafted, member = pickle_attacks(craft, mlp_archive_bytes, marker)[route]
    path = tmp_path / "model.pt2"
    path.write_bytes(crafted)
    with pytest.raises(ConversionError) as caught:
        load_exported(path)
    message = str(caught.value)
    assert str(path) in message and member in message and "\n" not in message
    assert "not in torch's weights-only allowlist" in message
    assert not marker.exists()


def test_legacy_torch_save_format_is_refused(craft, mlp_archive_bytes, tmp_path):
    """A raw pickle where torch.load will read (torch's pre-zip format) is not accepted."""
    marker = tmp_path / "marker"
    raw_pickle = craft.marker_pickles(marker)["os.system"]
    path = tmp_path / "model.pt2"
    path.write_bytes(craft.rewrite_zip(mlp_archive_bytes, {SAMPLE: raw_pickle}))
    with pytest.raises(ConversionError, match=f"{SAMPLE}.*legacy formats are not accepted"):
        load_exported(path)
    assert not marker.exists()


@pytest.mark.parametrize("route", ROUTES)
def test_crafted_pickle_runs_code_in_plain_torch_export_load(
    craft, route, mlp_archive_bytes, tmp_path
):
    """The attacks are live: without the checks, torch.export.load creates the marker."""
    marker = tmp_path / "marker"
    crafted, _ = pickle_attacks(craft, mlp_archive_bytes, marker)[route]
    path = tmp_path / "model.pt2"
    path.write_bytes(crafted)
    try:
        torch.export.load(str(path))
    except Exception:  # noqa: BLE001 - torch may fail after the payload ran; the marker tells
        pass
    assert marker.exists()


@pytest.mark.parametrize(
    "template",
    [
        "__import__('os').system('touch {marker}') or Symbol('s0', integer=True)",
        # a string argument: sympy parses it as Python source inside floor()
        "floor(\"__import__('os').system('touch {marker}')\")",
        "Symbol(\"__import__('os').system('touch {marker}')\", integer=True)",
        "L[\"__import__('os').system('touch {marker}')\"].size()[0]",
    ],
    ids=["call", "string-in-function", "string-as-symbol-name", "string-as-input-name"],
)
def test_sympy_expression_that_runs_code_is_refused(
    craft, dynamic_archive_bytes, tmp_path, template
):
    marker = tmp_path / "marker"
    evil = template.format(marker=marker)

    def inject(node: object) -> None:  # every symbolic size of the graph
        if isinstance(node, dict):
            if "expr_str" in node:
                node["expr_str"] = evil
            for value in node.values():
                inject(value)
        elif isinstance(node, list):
            for value in node:
                inject(value)

    path = tmp_path / "dynamic.pt2"
    path.write_bytes(craft.edit_json(dynamic_archive_bytes, "models/model.json", inject))
    with pytest.raises(ConversionError, match=r"models/model.json.*symbolic expression"):
        load_exported(path)
    assert not marker.exists()


def test_dynamic_batch_archive_still_loads(dynamic_archive_bytes, tmp_path):
    path = tmp_path / "dynamic.pt2"
    path.write_bytes(dynamic_archive_bytes)
    program = load_exported(path)
    assert program.module()(torch.zeros(3, 64)).shape == (3, 10)


@pytest.mark.parametrize(
    "record, why",
    [
        ("data/aotinductor/model/model.so", "AOTInductor"),
        ("data/constants/opaque_obj_0", "opaque"),
    ],
)
def test_members_torch_would_load_as_code_are_refused(
    craft, record, why, mlp_archive_bytes, tmp_path
):
    path = tmp_path / "model.pt2"
    path.write_bytes(craft.rewrite_zip(mlp_archive_bytes, {}, add={record: b"\x7fELF"}))
    with pytest.raises(ConversionError, match=f"{record}.*{why}"):
        load_exported(path)


@pytest.mark.parametrize("wrapped", [False, True], ids=["pickle", "torch-save-zip"])
def test_pickle_under_an_unexpected_name_is_found_by_content(
    craft, wrapped, mlp_archive_bytes, tmp_path
):
    marker = tmp_path / "marker"
    payload = craft.marker_pickles(marker)["os.system"]
    payload = craft.torch_save_zip(payload) if wrapped else payload
    path = tmp_path / "model.pt2"
    path.write_bytes(craft.rewrite_zip(mlp_archive_bytes, {}, add={"extra/notes.bin": payload}))
    with pytest.raises(ConversionError, match=r"extra/notes.bin.*posix.system"):
        load_exported(path)


def test_overlapping_members_are_refused(craft, mlp_archive_bytes, tmp_path):
    """Two directory entries sharing one local header: the non-recursive zip bomb's trick."""
    crafted = bytearray(craft.rewrite_zip(mlp_archive_bytes, {}, add={"extra/b": b"b" * 64}))
    directory = crafted.rindex(b"PK\x01\x02")  # the last central-directory entry: extra/b
    crafted[directory + 42 : directory + 46] = (0).to_bytes(4, "little")  # its header offset
    path = tmp_path / "model.pt2"
    path.write_bytes(bytes(crafted))
    with pytest.raises(ConversionError, match="extra/b.*overlaps"):
        load_exported(path)


@pytest.mark.parametrize(
    "data_pkl, why",
    [
        # STACK_GLOBAL whose operands come back through the memo: allowed global, then a call
        (
            b"\x80\x04\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94h\x00h\x01\x93)R.",
            None,
        ),
        (b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94h\x00h\x01\x93.", "posix.system"),
        (b"\x80\x02\x82\x01.", "EXT1"),  # copyreg extension registry
        (
            b"\x80\x02ccollections\nOrderedDict\n)R)R.",
            "calls a value of kind instance",
        ),  # call the result
        (b"\x80\x02]}b.", "BUILD on a value of kind other"),
        (b"\x80\x02(ccollections\nOrderedDict\no.", None),  # OBJ on an allowed class
        (b"\x80\x02(cposix\nsystem\no.", "posix.system"),
        (b"\x80\x02(S'x'\nibuiltins\neval\n.", "builtins.eval"),  # INST
    ],
    ids=[
        "memo-allowed",
        "memo-refused",
        "ext1",
        "call-instance",
        "build-list",
        "obj",
        "obj-bad",
        "inst",
    ],
)
def test_sample_input_pickles_are_walked_opcode_by_opcode(
    craft, data_pkl, why, mlp_archive_bytes, tmp_path
):
    path = tmp_path / "model.pt2"
    path.write_bytes(craft.rewrite_zip(mlp_archive_bytes, {SAMPLE: craft.torch_save_zip(data_pkl)}))
    if why is None:
        check_exported_archive(path)  # passes the walk; torch itself decides the rest
        return
    with pytest.raises(ConversionError, match=f"archive/data.pkl.*{why}"):
        load_exported(path)


def test_empty_weight_declaring_a_huge_tensor_is_refused(craft, mlp_archive_bytes, tmp_path):
    def huge(doc: dict) -> None:
        sizes = doc["config"]["0.weight"]["tensor_meta"]["sizes"]
        sizes[:] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]

    crafted = craft.edit_json(mlp_archive_bytes, WEIGHTS_CONFIG, huge)
    path = tmp_path / "model.pt2"
    path.write_bytes(craft.rewrite_zip(crafted, {"data/weights/weight_0": b""}))
    with pytest.raises(ConversionError, match="model_weights_config.json.*declare more than"):
        load_exported(path)


def test_too_many_members_are_refused_before_reading_them(craft, mlp_archive_bytes, tmp_path):
    extra = {f"extra/{i}": b"" for i in range(10_001)}
    path = tmp_path / "model.pt2"
    path.write_bytes(craft.rewrite_zip(mlp_archive_bytes, {}, add=extra))
    with pytest.raises(ConversionError, match="members \\(limit 10000\\)"):
        load_exported(path)


def test_deflate_bomb_member_is_refused_by_its_ratio(mlp_archive_bytes, tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(mlp_archive_bytes)
    with zipfile.ZipFile(path, "a") as zf:
        root = zf.namelist()[0].partition("/")[0]
        zf.writestr(f"{root}/extra/zeros", bytes(8 << 20), compress_type=zipfile.ZIP_DEFLATED)
    assert len(zlib.compress(bytes(8 << 20))) < (8 << 20) // 200  # the member is a bomb
    with pytest.raises(ConversionError, match="extra/zeros.*compression ratio"):
        load_exported(path)


def test_total_declared_size_is_capped(craft, mlp_archive_bytes, tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(craft.rewrite_zip(mlp_archive_bytes, {}, add={"extra/big": bytes(2 << 20)}))
    with pytest.raises(ConversionError, match="extra/big.*declare more than 1048576"):
        load_exported(path, ArchiveLimits(max_total_bytes=1 << 20))


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd"])
def test_absolute_and_parent_member_names_are_refused(name, mlp_archive_bytes, tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(mlp_archive_bytes)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(zipfile.ZipInfo(name), b"x")
    path = tmp_path / "model.pt2"
    path.write_bytes(out.getvalue())
    with pytest.raises(ConversionError, match="absolute or parent-relative"):
        load_exported(path)


def test_normal_archive_loads_and_converts(craft, mlp_archive_bytes, tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(mlp_archive_bytes)
    program = load_exported(path)
    expected = craft.small_mlp().state_dict()
    for name, tensor in program.state_dict.items():
        assert torch.equal(tensor, expected[name])
    x = torch.rand(32, 64)
    deployable = convert_spiking(program, x, None, SpikingOptions(timesteps=8))
    assert deployable.manifest.outputs[0].shape == [-1, 10]


def other_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("x/readme.txt", "hello")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, why",
    [
        (None, "no such file"),
        (b"not a zip", "not a torch.export archive"),
        (other_zip(), "not a torch.export archive .* no archive_version"),
    ],
    ids=["missing", "not-zip", "other-zip"],
)
def test_unreadable_inputs_get_one_line_errors(content, why, tmp_path):
    path = tmp_path / "model.pt2"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConversionError, match=why) as caught:
        load_exported(path)
    assert "\n" not in str(caught.value)


def test_payloads_reference_the_callables_they_claim(craft, tmp_path):
    """Guard for the fixtures: the payloads reference the callables they claim to."""
    names = {
        kind: [arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]
        for kind, data in craft.marker_pickles(tmp_path / "m").items()
    }
    assert names == {
        "os.system": ["posix system"],
        "builtins.exec": ["__builtin__ exec"],
        "subprocess": ["commands check_call"],  # pickle writes py2 names below protocol 3
    }


@pytest.mark.parametrize("where", ["program", "weights-config"])
def test_a_parameter_name_torch_would_paste_into_code_is_refused(
    craft, mlp_archive_bytes, tmp_path, where
):
    """torch rebuilds the module from generated Python (``getattr(r, "<name>")``): a name
    closing that string ran code on load, with the model's outputs unchanged (found by a
    review). Names in the program and payload-config keys must be dotted names."""
    marker = tmp_path / "marker"
    evil = f'0.__class__")if __import__("os").system("touch {marker}")else("'
    records = {
        "program": "models/model.json",
        "weights-config": "data/weights/model_weights_config.json",
    }  # noqa: E501

    def rename(node: object) -> object:
        if isinstance(node, dict):
            return {(evil if k == "0.weight" else k): rename(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rename(v) for v in node]
        return evil if node == "0.weight" else node

    def edit(doc: dict) -> None:
        renamed = rename(doc)
        doc.clear()
        doc.update(renamed)

    path = tmp_path / "named.pt2"
    path.write_bytes(craft.edit_json(mlp_archive_bytes, records[where], edit))
    with pytest.raises(ConversionError, match=r"is not a dotted name"):
        load_exported(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("Pow(Symbol('s27', integer=True, positive=True), Integer(2))", True),  # L x L mask
        ("Mul(Integer(4), Pow(Symbol('s0', integer=True), Integer(8)))", True),
        ("Pow(Symbol('s0', integer=True), Integer(9))", False),
        ("Pow(Integer(10), Integer(1000000000000))", False),  # sympy would evaluate it
        ("Pow(Symbol('s0'), Symbol('s1'))", False),
        ("Pow(Symbol('s0'), Integer(-1))", False),
        ("Pow", False),
    ],
)
def test_a_power_of_a_size_is_read_only_to_a_small_whole_exponent(expression, allowed):
    """A causal mask over a dynamic length L exports its size as L**2 (a legitimate GPT .pt2
    was refused); a large or symbolic exponent stays refused."""
    from ganglion.converters.exported_archive import check_expression

    assert (check_expression(expression) is None) == allowed, check_expression(expression)
