"""The ``regtune`` command group and what every command shares (its console, errors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    pass


app = typer.Typer(
    help="Tune the regularization of PyTorch networks with k-fold CV.", no_args_is_help=True
)
console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


@app.callback()
def main() -> None:
    """regtune: regularization tuning with cross-validation."""


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(f"cannot read spec {path}: {exc}") from None
    if not isinstance(data, dict):
        raise fail(f"spec {path} must hold a JSON object")
    return data
