"""The `newsclf` command: root app, global options, and the one error boundary (`main`)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import typer

from newsclf import __version__
from newsclf.cli import _output
from newsclf.errors import NewsclfError, Terminated

# Global flags work anywhere before `--` (`newsclf data prepare --demo --json`): main() lifts them
# out of argv before Typer parses it; the root options below document them in --help.
GLOBAL_FLAGS = {"--json": "json", "--quiet": "quiet", "-q": "quiet", "--debug": "debug"}


class _Group(typer.core.TyperGroup):
    """A TyperGroup whose unused --help option needs no type coercion.

    Left at its default (None), a group's --help option is coerced through a pydantic TypeAdapter on
    every call, and importing pydantic for that was ~40% of `newsclf cloud status --help`. False is
    what a bool flag's coercion would give anyway.
    """

    def get_help_option(self, ctx: typer.Context) -> typer.core.TyperOption | None:  # type: ignore[override]
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


app = typer.Typer(
    name="newsclf",
    cls=_Group,
    help=(
        "Fine-tune a fake-news classifier, locally or on Google Cloud.\n\n"
        "Try it offline in a minute or two:  newsclf train --demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals leak secrets into CI logs
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsclf {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    json_: bool = typer.Option(False, "--json", help="Print exactly one JSON document on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and results; no progress."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks (also NEWSCLF_DEBUG=1)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Fine-tune a fake-news classifier, locally or on Google Cloud."""


def _register() -> None:
    from newsclf.cli import cloud as cloud_cli
    from newsclf.cli import config as config_cli
    from newsclf.cli import data as data_cli
    from newsclf.cli import job as job_cli
    from newsclf.cli import models as models_cli
    from newsclf.cli import train as train_cli

    app.command("train")(train_cli.train)
    app.command("evaluate")(train_cli.evaluate)
    app.command("predict")(train_cli.predict)
    app.add_typer(data_cli.app, name="data", cls=_Group)
    app.add_typer(cloud_cli.app, name="cloud", cls=_Group)
    app.add_typer(models_cli.app, name="models", cls=_Group)
    app.add_typer(config_cli.app, name="config", cls=_Group)
    # train options pass through to `newsclf train`'s own parser
    app.command(
        "job",
        rich_help_panel="Inside the training image",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(job_cli.job)


_register()


def _split_globals(argv: list[str]) -> tuple[list[str], dict[str, bool]]:
    flags: dict[str, bool] = {}
    rest: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in GLOBAL_FLAGS:
            flags[GLOBAL_FLAGS[arg]] = True
        else:
            rest.append(arg)
    return rest, flags


def _subcommands(group: typer.Typer) -> dict[str, typer.Typer | None]:
    """The names under a Typer app, read from its registrations (None: a leaf command)."""
    out: dict[str, typer.Typer | None] = {}
    for info in group.registered_commands:
        if info.callback is not None:
            out[info.name or info.callback.__name__.lower().replace("_", "-")] = None
    for group_info in group.registered_groups:
        if group_info.name:
            out[group_info.name] = group_info.typer_instance
    return out


def _command_name(args: list[str]) -> str:
    """`data prepare` from argv, by walking the registered commands (used in the JSON envelope).

    Reads Typer's registrations rather than building the click command tree, which app() builds
    again anyway: building it twice cost ~15% of `newsclf --help`.
    """
    group: typer.Typer | None = app
    names = []
    for arg in args:
        subs = _subcommands(group) if group is not None else {}
        if arg not in subs:
            if arg.startswith("-"):
                continue
            break
        names.append(arg)
        group = subs[arg]
    return " ".join(names)


class _LazyMarkdown:
    """Stands in for rich.markdown.Markdown until typer renders markdown (newsclf never does)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.markdown import Markdown

        return Markdown(*args, **kwargs)


class _LazyTraceback:
    """Stands in for rich.traceback.Traceback until typer renders a pretty traceback."""

    @classmethod
    def from_exception(cls, *args: Any, **kwargs: Any) -> Any:
        from rich.traceback import Traceback

        return Traceback.from_exception(*args, **kwargs)


def _import_rich_utils_lightly() -> None:
    """Import typer.rich_utils (help and usage-error rendering) without what it never uses here.

    It imports rich.markdown (markdown-it-py, pygments) and rich.traceback (pygments) at the top,
    for markdown help and pretty tracebacks: over half of `newsclf --help`. Stand-ins sit in
    sys.modules only while it is imported; the real modules load on first real use.
    """
    import types

    if "typer.rich_utils" in sys.modules:
        return
    stubs = {}
    stand_ins = (("rich.markdown", "Markdown", _LazyMarkdown), ("rich.traceback", "Traceback", _LazyTraceback))
    for name, attr, stand_in in stand_ins:
        if name not in sys.modules:
            stub = types.ModuleType(name)
            setattr(stub, attr, stand_in)
            stubs[name] = sys.modules[name] = stub
    try:
        import typer.rich_utils  # noqa: F401
    except ImportError:
        pass  # a typer without it: it renders help its own way
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]


def _is_usage_error(e: BaseException) -> bool:
    # Typer's vendored click raises UsageError/BadParameter (exit code 2) in non-standalone mode
    return hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int)


INTERRUPTED, TERMINATED = 130, 143  # Ctrl-C; SIGTERM (128 + 15, what shells and CI runners report)


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (`docker stop`, `timeout`, a cancelled CI job, a preempted VM) unwinds like Ctrl-C.

    The command cleans up as after Ctrl-C (temporary files, status.json, the resume hint) and
    main() exits 143 with its one JSON document. A second SIGTERM is ignored, so that the clean-up
    finishes; SIGKILL still ends the process at once.
    """
    if _output.state.terminated:
        return
    _output.state.terminated = True
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 error, 2 usage, 130 interrupted, 143 terminated."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding program): its own handling stays
        previous = None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupted() -> int:
    code = TERMINATED if _output.state.terminated else INTERRUPTED
    _output.emit_error("Terminated (SIGTERM)" if code == TERMINATED else "Interrupted", code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    args, flags = _split_globals(list(sys.argv[1:] if argv is None else argv))
    _import_rich_utils_lightly()
    debug = flags.get("debug", False) or os.environ.get("NEWSCLF_DEBUG", "") not in ("", "0", "false")
    _output.reset(json=flags.get("json", False), quiet=flags.get("quiet", False), debug=debug)
    _output.state.command = _command_name(args)
    _output.route_logging()
    try:
        rv = app(args=args, prog_name="newsclf", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == INTERRUPTED:  # Typer turns Ctrl-C (and SIGTERM's Terminated) into a plain exit 130
            code = _interrupted()
    except NewsclfError as e:
        if debug:
            import traceback

            traceback.print_exc()
        code = e.exit_code
        _output.emit_error(str(e), code)
    except KeyboardInterrupt:  # Terminated too
        code = _interrupted()
    except typer.Abort:
        code = 1
        _output.emit_error("Aborted", code)
    except Exception as e:
        if _is_usage_error(e):
            code = e.exit_code  # type: ignore[attr-defined]
            if _output.state.json:
                _output.emit_error(e.format_message(), code)  # type: ignore[attr-defined]
            else:
                e.show()  # type: ignore[attr-defined]
        else:
            if debug:
                raise
            code = 1
            _output.emit_error(
                f"{type(e).__name__}: {e} (unexpected; rerun with --debug for the traceback and report it)",
                code,
            )
    _output.finish(code)
    return code
