"""The ``nudgekit`` command line: a thin layer over the library.

Each command parses its options, calls one workflow function and prints. Errors in the
input are printed as one line on stderr with exit code 2. Commands live in one module per
theme and register themselves on the shared typer ``app``; the modules are imported in
the order ``nudgekit --help`` should list them, the main job first.
"""

import importlib

from nudgekit.cli._app import app

for _module in ("_quickstart", "_store", "_data", "_core", "_report", "_experiments", "_scale"):
    importlib.import_module(f"nudgekit.cli.{_module}")


def main() -> None:
    app()


__all__ = ["app", "main"]
