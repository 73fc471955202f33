"""Built-in embedding models: building them at setup time and running them with onnxruntime."""
