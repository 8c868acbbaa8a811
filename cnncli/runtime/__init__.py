"""onnxruntime plumbing shared by every layer that runs a model: sessions, providers, one-line
run errors. Below the reverse builder (which runs small value subgraphs) and the engine."""
