"""kubescribe runtime: serves an ONNX CTC artifact over an OpenAI-compatible HTTP API."""
