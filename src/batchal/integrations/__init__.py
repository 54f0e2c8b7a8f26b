"""Thin layers between batchal and other frameworks' public APIs (one module each)."""
