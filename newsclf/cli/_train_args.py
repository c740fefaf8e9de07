"""`newsclf train` flags read by other commands (`job`, `cloud run`): parsed by the train command itself."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

# train flags that make no sense inside the job (data and run dir come from the bucket)
NOT_IN_JOB = ("data", "demo", "resume", "run", "run_id")
SWEEP_FLAGS = ("sweep", "sweep_file", "metric", "sweep_id")  # a job runs one trial: its sweep's plan picks it


def train_command() -> Any:
    """The `train` command on its own, without the root app (which imports every command group)."""
    from newsclf.cli.train import train

    single = typer.Typer()
    single.command("train")(train)
    return typer.main.get_command(single)  # an app with one command is that command


def train_options(args: list[str]) -> Any:
    """TrainOptions from `newsclf train` flags, parsed by the train command itself (one definition)."""
    from newsclf.config import get_settings
    from newsclf.train import TrainOptions

    train_cmd = train_command()
    ctx = train_cmd.make_context("newsclf job", list(args))
    params = ctx.params
    defaults = {p.name: p.default for p in train_cmd.params}
    swept = [f"--{k.replace('_', '-')}" for k in SWEEP_FLAGS if params.get(k) is not None]
    if swept:
        raise typer.BadParameter(
            f"{', '.join(swept)} after `--`: give the sweep to `newsclf cloud run` itself, before `--`"
        )
    bad = [f"--{k.replace('_', '-')}" for k in NOT_IN_JOB if params.get(k) != defaults.get(k)]
    if bad:
        raise typer.BadParameter(
            f"{', '.join(bad)} cannot be used in a job: the job takes data and run from the bucket"
        )
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    overrides = {k: v for k, v in params.items() if k in names and v not in (None, False)}
    if params.get("model"):
        overrides["base_model"] = params["model"]
    return TrainOptions.from_settings(get_settings(), **overrides)


def requested_processes(args: list[str]) -> int | None:
    """--num-processes N among the train options, or None when not given."""
    ctx = train_command().make_context("newsclf job", list(args))
    source = ctx.get_parameter_source("num_processes")
    return int(ctx.params["num_processes"]) if source is not None and source.name == "COMMANDLINE" else None


def demo_requested(args: list[str]) -> bool:
    """Whether the train options ask for --demo."""
    return bool(train_command().make_context("newsclf job", list(args)).params.get("demo"))
