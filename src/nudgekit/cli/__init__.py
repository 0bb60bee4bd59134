"""The ``nudgekit`` command line: a thin layer over the library.

Each command parses its options, calls one library function and prints. Errors in the
input are printed as one line on stderr with exit code 2. Commands live in one module
per theme and register themselves on the shared typer ``app``.
"""

from nudgekit.cli import (  # noqa: F401  (each module registers its commands)
    _core,
    _data,
    _experiments,
    _quickstart,
    _report,
    _scale,
    _store,
)
from nudgekit.cli._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
