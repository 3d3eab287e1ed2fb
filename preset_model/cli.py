"""The ``preset-model`` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import sys

import typer

from .errors import PresetModelError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train and use the DAFx 2021 VAE-flow preset model on dexed_data datasets.")


def main() -> None:
    """Console entry point: run the app, turning expected errors into one clear line and exit 2."""
    try:
        app()
    except PresetModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
