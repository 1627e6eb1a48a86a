"""Serving a trained model outside training: ONNX export and onnxruntime scoring."""
