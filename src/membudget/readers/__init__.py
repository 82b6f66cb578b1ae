"""Readers turn files into what they say: GGUF and safetensors headers, Hugging Face configs."""
