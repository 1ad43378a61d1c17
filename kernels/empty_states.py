"""Values a fresh recurrent state starts from, importable without torch (the ONNX Runtime
backend checks a bundle's stored fresh state against them on nodes without torch)."""

EMPTY_WKV_P = -1e38  # the WKV scan's running maximum before any token (``kernels.wkv``)
