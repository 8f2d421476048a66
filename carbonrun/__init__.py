"""carbonrun: what a command really cost in energy and carbon.

Importing this package does no I/O and no network; heavy modules load on first use.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "track"]


def __getattr__(name: str) -> object:
    # The Python API (carbonrun.track) is loaded on first use, so `import carbonrun` stays cheap.
    if name == "track":
        from carbonrun.api import track  # `import carbonrun` stays cheap

        return track
    raise AttributeError(name)
