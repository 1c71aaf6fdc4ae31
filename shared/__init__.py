"""Code that every demohub app shares: loading, input checks, ONNX, UI parts, the CLI and the hub server."""
