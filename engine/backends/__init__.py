from culturepark.engine.backends.base import Backend, Completion, Request

__all__ = ["Backend", "Completion", "Request"]
