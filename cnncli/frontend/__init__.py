"""The graph front end every command shares: read the model file safely, fold what is constant,
and infer every tensor's shape (ONNX shape inference, then onnxruntime's symbolic inference).

``cnncli.frontend.load`` and ``cnncli.frontend.graph`` are the entry points; the modules here hold the parts.
"""
