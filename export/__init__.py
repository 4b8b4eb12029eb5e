"""Export: weights -> ONNX -> TensorRT engines."""
