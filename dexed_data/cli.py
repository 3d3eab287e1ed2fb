"""The ``dexed-data`` command line: parses arguments and calls library functions, nothing more.

Each command's work lives in the module named after it; everything here is callable from Python.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import DexedDataError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn DX7 SysEx collections into a clean, rendered HDF5 dataset.")


# --- import-sysex, export, info: owned by dexed_data.catalogue -----------------------------------

# --- render, merge, export-wav: owned by dexed_data.render / dexed_data.dataset ------------------


def main() -> None:
    """Console entry point: run the app, turning expected errors into one clear line and exit 2."""
    try:
        app()
    except DexedDataError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
