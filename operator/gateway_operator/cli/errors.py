"""One-line errors: what went wrong, on which object, and what to do about it."""

from __future__ import annotations

# Exit codes, documented in `gatewayctl --help` and README.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the input or the system has problems the user must fix (invalid manifests, unhealthy)
EXIT_USAGE = 2  # bad command line (Click's own code)
EXIT_UNAVAILABLE = 3  # could not reach Kubernetes or LiteLLM


class CliError(Exception):
    """An error the CLI reports as a single line and turns into an exit code."""

    def __init__(
        self, what: str, *, obj: str | None = None, fix: str | None = None, code: int = EXIT_PROBLEMS
    ):
        self.what = what
        self.obj = obj
        self.fix = fix
        self.code = code
        super().__init__(self.line())

    def line(self) -> str:
        parts = [f"{self.obj}: {self.what}" if self.obj else self.what]
        if self.fix:
            parts.append(self.fix)
        return "; ".join(parts)


class UnavailableError(CliError):
    def __init__(self, what: str, *, obj: str | None = None, fix: str | None = None):
        super().__init__(what, obj=obj, fix=fix, code=EXIT_UNAVAILABLE)
