"""`newsclf config`: inspect the resolved settings."""

from __future__ import annotations

import typer

from newsclf.cli import _output

app = typer.Typer(help="Inspect newsclf's settings.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print every setting, its value and where it came from (flag, env, .env or default).

    Secrets are masked. Variables are NEWSCLF_<NAME>; see .env.example.

    Example:  newsclf config show --json
    """
    from newsclf.config import describe

    rows = describe()

    def render(console) -> None:
        from rich.table import Table

        table = Table("setting", "value", "source", "variable", box=None)
        for r in rows:
            value = "" if r["value"] is None else str(r["value"])
            table.add_row(r["name"], value, r["source"], r["variable"])
        console.print(table)

    _output.emit({"settings": rows}, render)
