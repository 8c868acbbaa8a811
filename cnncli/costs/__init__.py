"""Cost rules: per-op MACs/FLOPs/params, the per-layer stats rows, receptive fields and connectivity."""
