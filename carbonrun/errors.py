"""Errors the CLI turns into one line on stderr and a documented exit code."""


class CarbonrunError(Exception):
    """A user-facing failure: `message` is one line that says what to do; `exit_code` is documented."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
