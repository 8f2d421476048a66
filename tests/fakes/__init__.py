"""Fake hardware for tests: trees on disk that behave like the real thing (see powercap.py)."""
