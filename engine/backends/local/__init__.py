"""The embedded local model: `model` (loading, GGUF cache), `batcher`, `backend`."""
