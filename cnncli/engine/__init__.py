"""Running models on onnxruntime: sessions, model inputs, memory estimates, projection targets, the
projection engine and the top-k scan."""
