"""The backends an endpoint calls: the interface, OpenAI-compatible HTTP, a replay cache, the embedded model."""
from culturepark.engine.backends.base import Backend, Completion, Request

__all__ = ["Backend", "Completion", "Request"]
