"""A node serving a spiking bundle on the Lava backend: requests whose sequence length builds a
new Lava network (Lava forks its processes then) are answered, also after the model is
reloaded through the repository API while gRPC's threads run, and the node stops on SIGTERM.
Lava runs in a worker process of the node's (``lava_worker``)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton

from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.session import load

pytestmark = pytest.mark.lava  # skipped where Lava does not import (root conftest)


def _ask(client: triton.InferenceServerClient, x: np.ndarray) -> np.ndarray:
    given = triton.InferInput("input", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    return client.infer("snn", [given], client_timeout=60).as_numpy("output")


def test_new_sequence_lengths_and_a_reload_are_answered_and_sigterm_stops_the_node(
    launch_node, leaky, tmp_path
) -> None:
    folder = save_bundle(leaky(12), tmp_path / "snn")  # time-major: any sequence length
    inline = load(folder, backend="lava")
    rng = np.random.default_rng(0)
    with launch_node([f"snn={folder}", "--backend", "lava"], tmp_path) as node:
        client = triton.InferenceServerClient(node.address)
        for steps in (12, 5, 9, 12):
            x = (rng.random((steps, 2, 6)) > 0.5).astype(np.float32)
            np.testing.assert_array_equal(_ask(client, x), inline.run(x))
        client.unload_model("snn")
        client.load_model("snn")  # Lava starts again while the node's threads run
        x = (rng.random((7, 1, 6)) > 0.5).astype(np.float32)
        np.testing.assert_array_equal(_ask(client, x), inline.run(x))
        client.close()
        node.process.terminate()
        assert node.process.wait(timeout=30) is not None
    inline.close()
