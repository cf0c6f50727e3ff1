"""Phase objects (synthetic kinds) and offline image sources with deterministic splits."""
