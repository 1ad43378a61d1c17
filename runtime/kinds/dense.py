"""The ``dense`` kind: a network deployed as it is — one call, named tensors, no time.

Architectures:
- ``exported``: a user's ``torch.export`` program; bundle files ``model.pt2`` (the torch face,
  read through the guarded loader) and ``model.onnx``;
- ``onnx``: a user's ONNX model; ``model.onnx`` only (ONNX Runtime and TensorRT run it; the
  torch backend says it has no torch form);
- our own architectures (``models/vision``: ``vig``, ``vit``): ``config.json`` plus
  ``weights.safetensors``, and ``model.onnx`` exported from the module.

Any of them may add ``model.int8.onnx`` (ONNX Runtime static QDQ quantization), which the
onnxruntime backend runs with ``precision="int8"``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganglion.models.errors import BundleError
from ganglion.models.manifest import Manifest
from ganglion.runtime.kinds.base import ArtifactWriter, ProgramKind, Tensors

if TYPE_CHECKING:
    import onnx
    import torch

    from ganglion.models.deployable import Deployable
    from ganglion.runtime.program import Program

EXPORTED, ONNX_ONLY = "exported", "onnx"
PT2, ONNX, ONNX_INT8 = "model.pt2", "model.onnx", "model.int8.onnx"
PRECISION_FILES = {"fp32": ONNX, "int8": ONNX_INT8}


class DenseOnnx:
    """The ONNX face of a dense program: the one graph is the step (there are no steps)."""

    def __init__(self, deployable: Deployable) -> None:
        self.deployable = deployable

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """The converter's graph, or one exported from our own architecture's module."""
        import onnx

        stored = self.deployable.module.onnx_models.get("fp32")
        if stored is not None:
            return onnx.load_from_string(stored)
        return _export_module(self.deployable, opset)

    def sequence_graph(self, opset: int) -> None:
        """Dense programs have no sequence form."""
        return None


def onnx_parameters(model: onnx.ModelProto) -> int:
    """Parameters of an ONNX graph: the elements of its floating-point initializers (integer
    ones are shapes and indices)."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
              onnx.TensorProto.DOUBLE}  # fmt: skip
    return sum(
        math.prod(tensor.dims) for tensor in model.graph.initializer if tensor.data_type in floats
    )


def _export_module(deployable: Deployable, opset: int) -> onnx.ModelProto:
    import torch

    from ganglion.converters.torch_onnx import torch_to_onnx
    from ganglion.runtime.kinds import kind_of

    module, manifest = deployable.module.inner.eval(), deployable.manifest
    examples = kind_of(manifest).example_inputs(manifest, batch=2)
    args = tuple(torch.from_numpy(examples[s.name]) for s in manifest.inputs)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    names = [s.name for s in manifest.inputs], [s.name for s in manifest.outputs]
    return torch_to_onnx(module, args, *names, tuple({0: batch} for _ in args), opset)


class DenseKind(ProgramKind):
    """Stateless programs: ``step`` is ``run``."""

    name = "dense"
    has_steps = False
    infinite_weights = True  # a user's network: attention masks may hold -inf

    def build_module(
        self, manifest: Manifest, config: dict[str, Any], tensors: Tensors, folder: Path
    ) -> torch.nn.Module:
        """The DenseProgram: from model.pt2, or from our architecture's config and weights."""
        from ganglion.models.dense import DenseProgram

        names = [s.name for s in manifest.inputs], [s.name for s in manifest.outputs]
        onnx_models = {
            p: (folder / f).read_bytes()
            for p, f in PRECISION_FILES.items()
            if f in manifest.artifacts
        }
        if manifest.architecture == ONNX_ONLY:
            return DenseProgram(torch_identity(), *names, onnx_models=onnx_models)
        if manifest.architecture == EXPORTED:
            from ganglion.converters.exported_archive import load_exported

            program = load_exported(folder / PT2)
            return DenseProgram(program.module(), *names, program, onnx_models)
        from ganglion.models.vision import vision_model_class

        try:
            cls = vision_model_class(manifest.architecture)
        except KeyError as exc:
            raise BundleError(
                f"unknown architecture {manifest.architecture!r} for dense programs"
            ) from exc
        inner = cls.from_config(config)
        inner.load_state_dict(tensors)
        return DenseProgram(inner, *names, onnx_models=onnx_models)

    def torch_face_missing(self, manifest: Manifest) -> str | None:
        """Why an ONNX-converted program cannot run on torch."""
        if manifest.architecture != ONNX_ONLY:
            return None
        return (
            "this dense bundle was converted from ONNX and has no torch form; "
            "run it with --backend onnxruntime (or tensorrt)"
        )

    def module_tensors(self, deployable: Deployable) -> Tensors:
        """Our architectures' weights; an exported program keeps its weights in model.pt2."""
        if deployable.manifest.architecture in (EXPORTED, ONNX_ONLY):
            return {}
        return {k: v.detach().contiguous() for k, v in deployable.module.inner.state_dict().items()}

    def required_artifacts(self, manifest: Manifest) -> tuple[str, ...]:
        """model.onnx always; model.pt2 for exported programs; weights for ours."""
        if manifest.architecture == EXPORTED:
            return ("config.json", ONNX, PT2)
        if manifest.architecture == ONNX_ONLY:
            return ("config.json", ONNX)
        return ("config.json", "weights.safetensors", ONNX)

    def torch_run(self, module: torch.nn.Module, inputs: Tensors, record: bool = False) -> Tensors:
        """The network on its named inputs."""
        return module.run(inputs)

    def artifact_writers(self, deployable: Deployable) -> dict[str, ArtifactWriter]:
        """model.onnx (and model.int8.onnx where made); model.pt2 for exported programs."""
        module = deployable.module
        from ganglion.runtime.onnx_export import onnx_artifact_writers

        writers = onnx_artifact_writers(("step",))
        if "int8" in module.onnx_models:
            writers[ONNX_INT8] = lambda d, p: p.write_bytes(d.module.onnx_models["int8"])
        if deployable.manifest.architecture == EXPORTED:
            writers[PT2] = _write_pt2
        return writers

    def onnx_face(self, deployable: Deployable) -> DenseOnnx:
        """The dense program's ONNX graph."""
        return DenseOnnx(deployable)

    def describe(self, deployable: Deployable) -> dict[str, Any]:
        """Parameters, and for exported programs the operators the graph calls."""
        module = deployable.module
        if deployable.manifest.architecture == ONNX_ONLY:
            import onnx

            params = onnx_parameters(onnx.load_from_string(module.onnx_models["fp32"]))
        else:
            params = sum(int(p.numel()) for p in module.parameters())
        info: dict[str, Any] = {"layers": [], "parameters": params}
        if module.exported is not None:
            ops: dict[str, int] = {}
            for node in module.exported.graph.nodes:
                if node.op == "call_function":
                    name = str(node.target).removeprefix("aten.").split(".")[0]
                    ops[name] = ops.get(name, 0) + 1
            info["operators"] = dict(sorted(ops.items(), key=lambda kv: -kv[1]))
        return info

    def describe_files(self, program: Program) -> dict[str, Any] | None:
        """Parameters from the files: an exported program's from model.pt2's program JSON,
        ours from weights.safetensors (an ONNX-only program has none). The operators of an
        exported graph are left out: listing them needs torch (``describe`` has them)."""
        assert program.folder is not None
        if program.manifest.architecture == ONNX_ONLY:
            from ganglion.converters.onnx_file import load_onnx

            return {"layers": [], "parameters": onnx_parameters(load_onnx(program.folder / ONNX))}
        if program.manifest.architecture != EXPORTED:
            return super().describe_files(program)
        from ganglion.runtime.artifact_shapes import element_count, exported_parameter_shapes

        shapes = exported_parameter_shapes(program.folder / PT2)
        if shapes is None:
            return None
        return {"layers": [], "parameters": element_count(shapes.values())}

    def parity_atol(self, manifest: Manifest, output: str) -> float | None:
        """Float outputs within 1e-4 (ONNX Runtime fuses and reorders sums)."""
        return 1e-4


def torch_identity() -> torch.nn.Module:
    """The placeholder network of an ONNX-only program (never run: the torch backend refuses)."""
    import torch

    return torch.nn.Identity()


def _write_pt2(deployable: Deployable, path: Path) -> None:
    import torch

    torch.export.save(deployable.module.exported, str(path))
