"""`resdsl lsp`: the language server, over stdin and stdout (an editor starts it; see docs/editors.md)."""

from __future__ import annotations

import typer


def lsp() -> None:
    """Serve the Language Server Protocol over stdio: diagnostics, hover, definitions, completion, outline."""
    from resdsl.lsp.server import serve

    serve()


def register(app: typer.Typer) -> None:
    app.command("lsp")(lsp)
