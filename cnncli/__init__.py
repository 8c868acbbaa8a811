"""cnncli: per-layer cost accounting and deconvnet projections for ONNX CNNs."""

__version__ = "0.1.0"
