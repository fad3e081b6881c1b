"""The backends an endpoint calls: the interface (`base`), OpenAI-compatible HTTP, and the embedded local model."""
from culturepark.engine.backends.base import Backend, Completion, Request

__all__ = ["Backend", "Completion", "Request"]
