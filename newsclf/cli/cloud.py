"""`newsclf cloud`: build the training image and run training on Compute Engine."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from newsclf.cli import _output

app = typer.Typer(help="Build the training image and train on a Compute Engine VM.", no_args_is_help=True)


# -- build -----------------------------------------------------------------------------------------


@app.command("build")
def build(
    source: Path | None = typer.Option(
        None,
        "--source",
        help="A newsclf project directory to build (default: the installed newsclf itself).",
        show_default=False,
    ),
    project: str | None = typer.Option(None, "--project", help="Google Cloud project (default: NEWSCLF_GCP_PROJECT)."),
    bucket: str | None = typer.Option(
        None, "--bucket", help="Bucket for the source and logs (default: NEWSCLF_BUCKET)."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Follow the build log to the end (--no-wait: print the build id and return)."
    ),
) -> None:
    """Build the training image with Cloud Build and push it to Artifact Registry.

    Builds the installed newsclf (its package, plus the Dockerfile, uv.lock and
    project files it carries), so it works from anywhere after `pipx install
    newsclf`; --source builds a project directory instead. Packs the source
    (minus what .dockerignore and .gcloudignore exclude) into
    gs://BUCKET/builds/<sha256>.tar.gz, skipping the upload when that archive is
    already there, builds the Dockerfile on Cloud Build and pushes
    REGION-docker.pkg.dev/PROJECT/REPO/newsclf-train tagged with the source hash,
    the newsclf version (the tag `cloud run` starts) and `latest`. The build
    log streams to stderr; the image and its digest are printed at the end.

    Examples:

      newsclf cloud build --project my-project --bucket my-newsclf-bucket

      newsclf cloud build --source .

      newsclf cloud build --no-wait --json
    """
    from newsclf.cloud.cloudbuild.submit import BuildFailedError, submit_build
    from newsclf.config import get_settings

    settings = get_settings()
    if bucket:
        settings = settings.model_copy(update={"bucket": bucket})
    streaming = not (_output.state.json or _output.state.quiet)

    def show_line(line: str) -> None:
        sys.stderr.write(line + "\n")  # raw: build logs are not rich markup
        sys.stderr.flush()

    try:
        result = submit_build(
            settings, source_dir=source, project=project, wait=wait, on_log=show_line if streaming else None
        )
    except BuildFailedError as e:
        if not streaming:  # the log was not shown as it came: show how it ended
            for line in e.result.log_tail:
                show_line(line)
        raise

    data = result.to_dict()
    if not wait:
        if result.log_url:
            _output.info(f"Follow it at {result.log_url}")

        def render_started(console) -> None:
            console.print(result.build_id, highlight=False)

        _output.emit(data, render_started)
        return

    def render(console) -> None:
        console.print(f"Image   {result.image}", highlight=False)
        if result.version_image:
            console.print(
                f"Tagged  {result.version_image} (newsclf {result.version}: what `cloud run` starts)", highlight=False
            )
        console.print(f"Digest  {result.digest or 'unknown'}", highlight=False)
        console.print(f"Built in {_build_took(result.duration_s)} (Cloud Build {result.build_id})", highlight=False)

    _output.emit(data, render)


def _build_took(seconds: float | None) -> str:
    if seconds is None:
        return "unknown time"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


# -- run, status, logs, stop (Compute Engine) ------------------------------------------------------

POLL_HELP = "Seconds between polls of the VM, its serial port and the run's status."
DETACH_HINT = "Re-attach: newsclf cloud logs {run} --follow · stop it: newsclf cloud stop"


def _compute(bucket: str | None = None, *, need_bucket: bool = True):  # -> (settings, project, clients, store)
    from newsclf.cloud.compute.clients import make_clients
    from newsclf.cloud.compute.store import RunStore
    from newsclf.cloud.google.project import resolve_project
    from newsclf.cloud.storage.client import require_bucket
    from newsclf.config import get_settings

    settings = get_settings()
    if bucket:
        settings = settings.model_copy(update={"bucket": bucket})
    project = resolve_project(settings, endpoint=settings.compute_api_endpoint)
    name = require_bucket(settings) if need_bucket or settings.bucket else None
    clients = make_clients(settings)
    store = RunStore(clients.storage_client(), name) if name else None
    return settings, project, clients, store


def _confirm(what: str) -> None:
    """Ask on a terminal; elsewhere (scripts, --json) refuse and name --yes."""
    from newsclf.errors import InputError

    if sys.stdin.isatty() and not _output.state.json:
        typer.confirm(what + "?", abort=True)
    else:
        raise InputError(f"{what}: pass --yes to confirm")


def _money(usd: float | None) -> str:
    return "?" if usd is None else f"${usd:,.2f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _follow_run(clients, project: str, vm, run_id: str, store, *, poll_s: float, to_stdout: bool, lines: list[str]):
    """Stream the run's job lines (stdout or stderr) with a status line on a terminal; None on Ctrl-C."""
    import contextlib

    from newsclf.cloud.compute.follow import JobLine, Outcome, Tick, follow

    line_console = _output.stdout() if to_stdout else _output.stderr()
    show_lines = (to_stdout and not _output.state.json) or (not to_stdout and not _output.state.quiet)
    live = None
    if _output.show_progress():
        status_console = line_console if line_console.file.isatty() else _output.stderr()
        live = status_console.status(f"Waiting for VM {vm.name}…", spinner="dots")
    try:
        with live if live is not None else contextlib.nullcontext():
            for event in follow(clients, project, vm, run_id, store, poll_s=poll_s):
                if isinstance(event, JobLine):
                    lines.append(event.text)
                    if show_lines:
                        line_console.print(event.text, markup=False, emoji=False, highlight=False, soft_wrap=True)
                        line_console.file.flush()
                elif isinstance(event, Tick) and live is not None:
                    phase = f" · {event.phase}" if event.phase else ""
                    live.update(
                        f"VM {event.vm_status} · {_duration(event.elapsed_s)} · est. {_money(event.cost_usd)}{phase}"
                    )
                elif isinstance(event, Outcome):
                    return event
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return None
    return None


VM_TAIL = 8  # the VM's own progress lines shown when it stopped without a final status


def _vm_tail(settings, project: str, clients, vm, run_id: str) -> tuple[list[str], str | None]:
    """The last `newsclf-vm` lines of a stopped VM's serial port for the run, and the likely cause they name."""
    from newsclf.cloud import iam
    from newsclf.cloud.compute.follow import SerialReader
    from newsclf.errors import NewsclfError

    try:
        _, vm_lines = SerialReader(clients, project, vm.zone, vm.name, run_id).read()
    except Exception:  # a VM may not serve its serial port any more: show the usual message
        return [], None
    try:
        account = iam.vm_service_account(settings, project)
    except NewsclfError:
        account = settings.vm_service_account or "?"
    return vm_lines[-VM_TAIL:], iam.likely_cause(vm_lines, account=account, bucket=vm.bucket or settings.bucket)


def _explain_stop(outcome, settings, project: str, clients, vm) -> list[str] | None:
    """A run whose VM stopped without a final status: the VM's last lines, and the likely cause in place of
    "interrupted (spot preemption, ...)" when they name one."""
    from newsclf.cloud.compute.vm import DOWN_STATES
    from newsclf.runstate import RunState

    if outcome.state != RunState.INTERRUPTED or outcome.vm_status not in DOWN_STATES:
        return None
    vm_lines, cause = _vm_tail(settings, project, clients, vm, outcome.run_id)
    if cause:
        outcome.error = f"VM {outcome.vm_name} stopped before run {outcome.run_id} finished: {cause}"
    return vm_lines


def _finish_run(outcome, *, lines: list[str] | None = None, vm_lines: list[str] | None = None) -> None:
    """Show how the run ended and exit with the job's code."""
    from newsclf.runstate import RunState

    data = outcome.to_dict()
    if lines is not None:
        data["lines"] = lines
    if vm_lines is not None:
        data["vm_lines"] = vm_lines

    def render(console) -> None:
        vm_state = outcome.vm_status or "deleted"
        console.print(f"Run {outcome.run_id} {outcome.state} (VM {outcome.vm_name}: {vm_state})", highlight=False)
        test = (outcome.metrics or {}).get("test") or {}
        if test:
            parts = [f"{k} {test[k]:.4f}" for k in ("accuracy", "macro_f1", "precision", "recall") if k in test]
            console.print("Test    " + "  ".join(parts), highlight=False)
        if outcome.model_uri:
            console.print(f"Model   {outcome.model_uri}", highlight=False)
            console.print(f"Pull it: newsclf models pull {outcome.run_id}", highlight=False)
        if vm_lines:
            console.print(f"Last lines of VM {outcome.vm_name}:", highlight=False)
            for line in vm_lines:
                console.print(f"  {line}", markup=False, emoji=False, highlight=False, soft_wrap=True)
        if outcome.state != RunState.SUCCEEDED:
            console.print(f"Log     newsclf cloud logs {outcome.run_id}", highlight=False)

    message = f"run {outcome.run_id} {outcome.state}: {outcome.error}"
    _output.emit(data, render, exit_code=outcome.exit_code, errors=[message] if outcome.exit_code else None)
    if outcome.state == RunState.SUCCEEDED and outcome.vm_status not in (None, "TERMINATED", "STOPPED", "SUSPENDED"):
        _output.info(f"VM {outcome.vm_name} is still {outcome.vm_status}: stop it with `newsclf cloud stop`")
    if outcome.exit_code:
        _output.emit_error(message, outcome.exit_code)  # the `Error:` line on stderr
        raise typer.Exit(outcome.exit_code)


def _detached(run_id: str, vm, *, interrupted: bool) -> None:
    data = {"run_id": run_id, "state": "detached", "vm": vm.name, "zone": vm.zone}
    if interrupted:
        _output.warn(f"Detached from run {run_id}: it keeps running on VM {vm.name} ({vm.zone})")
    if not _output.state.quiet:
        _output.stderr().print(DETACH_HINT.format(run=run_id), highlight=False)

    def render(console) -> None:
        console.print(run_id, highlight=False)

    _output.emit(data, render, exit_code=130 if interrupted else 0)
    if interrupted:
        raise typer.Exit(130)


def _check_train_options(args: list[str]) -> None:
    """Parse the options after `--` with the parser the VM's `newsclf job` uses: a typo, a bad value or
    a flag a job cannot take fails here (exit 2), before a VM is paid for."""
    from newsclf.cli._train_args import demo_requested, train_options
    from newsclf.cloud.compute.request import RESERVED_TRAIN_ARGS
    from newsclf.errors import InputError

    if any(a.split("=", 1)[0] in RESERVED_TRAIN_ARGS for a in args):
        return  # RunRequest refuses them, naming `cloud run` as the one that sets them
    usage_error: type[Exception] = typer.BadParameter.__mro__[1]  # click's UsageError: typer does not export it

    def refuse(message: str) -> Exception:
        return usage_error(f"Train options after `--`: {message}")  # exit 2, as for the command's own flags

    try:
        demo = demo_requested(args)
        if not demo:
            train_options(args).validate()
    except usage_error as e:  # no such option, a bad or missing value, a flag a job cannot take
        raise refuse(e.format_message()) from None  # type: ignore[attr-defined]
    except InputError as e:  # out of range, as the job would find it on the VM
        raise refuse(str(e)) from None
    if demo:
        raise refuse(
            "--demo trains on the built-in demo corpus, which a cloud job does not have: run "
            "`newsclf train --demo` here, or push a dataset with `newsclf data push` and drop --demo"
        )


def _check_training_image(settings, image: str, version: str | None) -> None:
    """Find the image the VM will pull in Artifact Registry (built for newsclf `version`, unless
    --image/NEWSCLF_IMAGE names a tag): a missing image fails here, not on a paid VM."""
    from newsclf.cloud.cloudbuild.image import check_image

    if not check_image(settings, image, version=version):
        _output.info(f"Image {image} is not in Artifact Registry: not checked before the VM pulls it")


@app.command("run")
def run(
    train_args: list[str] | None = typer.Argument(
        None,
        metavar="-- TRAIN_OPTIONS",
        help="Options for `newsclf job` (as for `newsclf train`), after `--`.",
        show_default=False,
    ),
    machine_type: str | None = typer.Option(
        None, "--machine-type", help="Machine type (default: NEWSCLF_MACHINE_TYPE)."
    ),
    gpu: str | None = typer.Option(None, "--gpu", metavar="TYPE:N", help="GPUs to attach, e.g. nvidia-tesla-t4:1."),
    spot: bool | None = typer.Option(
        None, "--spot/--no-spot", help="Use a spot VM (cheaper, can be preempted).", show_default=False
    ),
    disk_gb: int | None = typer.Option(None, "--disk-gb", help="Boot disk size (default: NEWSCLF_DISK_GB)."),
    zone: str | None = typer.Option(None, "--zone", help="Zone to try first (default: NEWSCLF_ZONE)."),
    max_hours: float | None = typer.Option(
        None, "--max-hours", help="The VM stops itself after this long, whatever happens (default: NEWSCLF_MAX_HOURS)."
    ),
    image: str | None = typer.Option(
        None, "--image", help="Training image (default: what `cloud build` pushed for this newsclf version)."
    ),
    keep_vm: bool = typer.Option(False, "--keep-vm", help="Leave the VM running when the job ends."),
    detach: bool = typer.Option(False, "--detach", help="Start the run and return; follow it later with `cloud logs`."),
    force: bool = typer.Option(False, "--force", help="Stop the VM's current job to start this run."),
    resume: str | None = typer.Option(
        None, "--resume", metavar="RUN_ID", help="Restart an interrupted run; it resumes from its checkpoints."
    ),
    wandb_key_in_metadata: bool = typer.Option(
        False,
        "--wandb-key-in-metadata",
        help="Opt-in: hand your W&B key to the VM in instance metadata (readable by project members). "
        "Prefer NEWSCLF_WANDB_SECRET (a Secret Manager secret).",
    ),
    bucket: str | None = typer.Option(None, "--bucket", help="Bucket name or gs:// URL (default: NEWSCLF_BUCKET)."),
    poll_interval: float = typer.Option(5.0, "--poll-interval", min=0.05, help=POLL_HELP),
    sweep: str | None = typer.Option(
        None,
        "--sweep",
        metavar="GRID",
        help='Run a sweep, e.g. "lr=1e-5,2e-5 batch_size=16,32" (as `newsclf train --sweep`).',
    ),
    sweep_file: Path | None = typer.Option(None, "--sweep-file", help="The sweep's grid from a YAML file."),
    metric: str | None = typer.Option(
        None, "--metric", help="Sweep objective: macro_f1 (default), accuracy, precision, recall or loss (validation)."
    ),
    parallel: int | None = typer.Option(
        None,
        "--parallel",
        min=1,
        metavar="N",
        help="Run up to N of the sweep's trials at once, each on its own Batch VM (default: 1).",
    ),
) -> None:
    """Train on a Compute Engine VM: create or restart it, follow the job, stop the VM.

    The VM (NEWSCLF_VM_NAME) pulls the training image, runs `newsclf job` on
    gs://BUCKET/data/processed, writes the run to gs://BUCKET/runs/RUN_ID/ and
    powers itself off; it never runs longer than --max-hours. Capacity or
    quota errors move on to the region's other zones. The job's log streams
    here; Ctrl-C detaches (the job keeps running). The exit code is the job's.

    Examples:

      newsclf cloud run --gpu nvidia-tesla-t4:1 --spot -- --epochs 2

      newsclf cloud run --detach && newsclf cloud logs --follow

    A sweep (--sweep/--sweep-file) is one Cloud Batch job with one task per trial, at most
    --parallel N at once, each an ordinary run (runs/RUN_ID/) on its own VM. Batch retries a task
    whose spot VM was preempted or lost (it resumes from its checkpoints), not a trial that failed by
    itself; --max-hours caps each task. The table follows the runs' status.json here; Ctrl-C or
    --detach leaves the sweep running (newsclf cloud status, newsclf models list --sweep SWEEP_ID,
    newsclf cloud stop --sweep SWEEP_ID). Running the same command again skips the trials that
    succeeded and submits the others.

      newsclf cloud run --sweep "lr=1e-5,2e-5 batch_size=16,32" --parallel 2 -- --epochs 2
    """
    from newsclf.cloud.compute.hardware import parse_gpu
    from newsclf.cloud.compute.lifecycle import start_run
    from newsclf.cloud.compute.request import RunRequest, check_max_hours
    from newsclf.cloud.compute.store import run_state
    from newsclf.cloud.iam import vm_service_account
    from newsclf.errors import InputError
    from newsclf.runs import new_run_id
    from newsclf.runstate import FINAL

    sweeping = sweep is not None or sweep_file is not None
    if sweeping or parallel is not None or metric is not None:
        from newsclf.cli import _cloud_sweep as _sweep

        if metric is not None and not sweeping:
            raise typer.BadParameter("--metric picks a sweep's objective: use it with --sweep or --sweep-file")
        given = {k for k, v in (("resume", resume), ("zone", zone), ("keep_vm", keep_vm or None), ("force", force or None),
                                ("wandb_key_in_metadata", wandb_key_in_metadata or None)) if v is not None}  # fmt: skip
        _sweep.check_cloud_flags(sweeping=sweeping, parallel=parallel, given=given)
    _check_train_options(list(train_args or []))  # first: a typo needs no network to be found
    if max_hours is not None:
        check_max_hours(max_hours)
    settings, project, clients, store = _compute(bucket)
    if image:
        settings = settings.model_copy(update={"image": image})
    if not store.has_dataset():
        raise InputError(
            f"No dataset in gs://{store.bucket}/data/ for the VM to train on: upload one with `newsclf data push` first"
        )
    if sweeping:  # a Cloud Batch job; single runs stay on their own Compute Engine VM
        from newsclf.cloud.cloudbuild.image import run_image

        sweep_image, image_version = run_image(settings, project)
        _check_training_image(settings, sweep_image, image_version)  # before anything is submitted
        _sweep.cloud_run(
            settings, project, store, image=sweep_image, train_args=list(train_args or []), spec=sweep, sweep_file=sweep_file,
            metric=metric, parallel=parallel, machine_type=machine_type or settings.machine_type,
            gpu=parse_gpu(gpu), spot=bool(spot), max_hours=max_hours if max_hours is not None else settings.max_hours,
            disk_gb=disk_gb if disk_gb is not None else settings.disk_gb, detach=detach, poll_s=poll_interval,
        )  # fmt: skip
        return
    train = list(train_args or [])
    if resume:
        state = run_state(store, resume)
        if state in FINAL:
            raise InputError(f"Run {resume} already {state}: nothing to resume (start a new one without --resume)")
        if not train:
            from newsclf.cloud.fleet import train_args_of

            train = train_args_of(clients, project, settings.vm_name, resume)
    explicit = frozenset(
        name
        for name, value in (
            ("machine_type", machine_type),
            ("gpu", gpu),
            ("spot", spot),
            ("zone", zone),
            ("disk_gb", disk_gb),
        )
        if value is not None
    )
    wandb_key = None
    if wandb_key_in_metadata:
        if settings.wandb_api_key is None:
            raise InputError("--wandb-key-in-metadata needs a W&B key: set WANDB_API_KEY")
        wandb_key = settings.wandb_api_key.get_secret_value()
    from newsclf.cloud.cloudbuild.image import run_image

    image_ref, image_version = run_image(settings, project)
    req = RunRequest(
        run_id=resume or new_run_id(),
        bucket=store.bucket,
        image=image_ref,
        vm_name=settings.vm_name,
        zone=zone or settings.zone,
        machine_type=machine_type or settings.machine_type,
        gpu=parse_gpu(gpu),
        spot=bool(spot),
        disk_gb=disk_gb if disk_gb is not None else settings.disk_gb,
        max_hours=max_hours if max_hours is not None else settings.max_hours,
        keep_vm=keep_vm,
        force=force,
        train_args=train,
        zones=settings.zones,
        wandb_secret=settings.wandb_secret,
        wandb_key=wandb_key,
        explicit=explicit,
        service_account=vm_service_account(settings, project),
    )
    # pre-flight: nothing is created (or billed) until the job's options parse and its image exists
    if not train_args and train:
        _check_train_options(train)  # a resumed run's options, read from its VM
    _check_training_image(settings, req.image, image_version)
    started = start_run(clients, project, req, store=store, poll_s=poll_interval)
    vm = started.vm
    hourly = vm.hourly_usd
    _output.info(
        f"Run {req.run_id} on VM {vm.name} in {vm.zone} ({vm.hardware()}, est. {_money(hourly)}/h, "
        f"stops itself after {req.max_hours:g} h)"
    )
    if detach:
        _detached(req.run_id, vm, interrupted=False)
        return
    lines: list[str] = []
    outcome = _follow_run(clients, project, vm, req.run_id, store, poll_s=poll_interval, to_stdout=False, lines=lines)
    if outcome is None:
        _detached(req.run_id, vm, interrupted=True)
        return
    _finish_run(outcome, vm_lines=_explain_stop(outcome, settings, project, clients, vm))


def _disk_note(console, fleet) -> None:
    """Under the table: what the stopped VMs' disks cost, and how to stop paying for them."""
    stopped = fleet.stopped_disks()
    if stopped is None:
        return
    monthly, disks = stopped
    console.print(
        f"Stopped VMs still bill for their disks: est. {_money(monthly)}/month for {disks} GB; "
        "`newsclf cloud stop --delete` deletes a VM with its disk.",
        highlight=False,
    )


@app.command("status")
def status(
    zone: str | None = typer.Option(None, "--zone", help="Only this zone (default: every zone of the project)."),
) -> None:
    """Show newsclf's VMs (state, hardware, uptime, estimated cost, current run) and its sweep jobs on
    Cloud Batch in NEWSCLF_REGION (state, tasks by state, estimated cost so far).

    Costs come from a small built-in price table: an estimate, not a bill.

    Examples:

      newsclf cloud status

      newsclf cloud status --json
    """
    from newsclf.cloud.fleet import fleet_status

    settings, project, clients, store = _compute(need_bucket=False)
    fleet = fleet_status(clients, project, store, zone)
    for warning in fleet.warnings:
        _output.warn(warning)
    rows, sweeps = fleet.vms, fleet.sweeps
    data = fleet.as_dict()
    from newsclf.cli import _cloud_sweep as _sweep

    sweep_jobs = _sweep.status_jobs(settings, project)
    data["sweep_jobs"] = sweep_jobs

    def render(console) -> None:
        if sweep_jobs:
            _sweep.render_jobs(console, sweep_jobs)
        if not rows:
            if not sweep_jobs:
                console.print(
                    f"No newsclf VMs in project {project}: start one with `newsclf cloud run`", highlight=False
                )
            return
        from rich.table import Table

        if not console.is_terminal:
            console.width = max(console.width, 200)  # a pipe gets whole cells, not "newsc…"
        table = Table(
            "VM",
            "zone",
            "state",
            "machine",
            "GPUs",
            "spot",
            "uptime",
            "est. $/h",
            "est. so far",
            "run",
            "run state",
            box=None,
        )
        if sweeps:
            table.add_column("sweep")
        group = None
        for r in rows:
            if sweeps and r["sweep_id"] != group and group is not None:
                table.add_section()  # one block per sweep
            group = r["sweep_id"]
            gpus = f"{r['gpus']} x {r['gpu_type']}" if r["gpu_type"] else (str(r["gpus"]) if r["gpus"] else "-")
            table.add_row(
                r["name"],
                r["zone"],
                r["state"],
                r["machine_type"],
                gpus,
                "yes" if r["spot"] else "no",
                _duration(r["uptime_s"]) if r["uptime_s"] else "-",
                _money(r["est_usd_per_hour"]),
                _money(r["est_usd_so_far"]),
                r["run_id"] or "-",
                r["run_state"] or "-",
                *([r["sweep_id"] or "-"] if sweeps else []),
            )
        console.print(table)
        _disk_note(console, fleet)
        console.print("Costs are estimates from a built-in price table, not a bill.", style="dim", highlight=False)

    _output.emit(data, render)


@app.command("logs")
def logs(
    run: str | None = typer.Argument(None, help="Run id (default: the VM's current run)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming a running job until it ends."),
    bucket: str | None = typer.Option(None, "--bucket", help="Bucket name or gs:// URL (default: NEWSCLF_BUCKET)."),
    poll_interval: float = typer.Option(5.0, "--poll-interval", min=0.05, help=POLL_HELP),
) -> None:
    """Print a run's log: live from the VM while it runs, else from gs://BUCKET/runs/RUN/logs/.

    With --follow, re-attach to a running job (after Ctrl-C or --detach) and exit
    with its exit code when it ends.

    Examples:

      newsclf cloud logs --follow

      newsclf cloud logs 20261127-071500-1a2b3c
    """
    from newsclf.cloud.compute.follow import run_log, serial_snapshot
    from newsclf.cloud.compute.store import FINAL_RUN_STATES, run_state
    from newsclf.cloud.compute.vm import ACTIVE_STATES, find_vm
    from newsclf.errors import InputError

    settings, project, clients, store = _compute(bucket)
    vm = find_vm(clients, project, settings.vm_name)
    run_id = run or (vm.run_id if vm else None)
    if not run_id:
        raise InputError(
            f"No run given and no VM {settings.vm_name}: pass a run id (list them with `newsclf models list`)"
        )
    state = run_state(store, run_id)
    extra: dict = {}  # a stopped VM's last lines and their likely cause
    live = vm is not None and vm.run_id == run_id and vm.status in ACTIVE_STATES and state not in FINAL_RUN_STATES
    if live and follow:
        lines: list[str] = []
        outcome = _follow_run(clients, project, vm, run_id, store, poll_s=poll_interval, to_stdout=True, lines=lines)
        if outcome is None:
            _detached(run_id, vm, interrupted=True)
            return
        _finish_run(outcome, lines=lines, vm_lines=_explain_stop(outcome, settings, project, clients, vm))
        return
    if live and vm is not None:
        lines = serial_snapshot(clients, project, vm, run_id)
        source = "serial"
        _output.info(f"Run {run_id} is still running on VM {vm.name}: add --follow to keep watching")
    else:
        lines = run_log(store, run_id)
        source = "bucket"
        stopped = (
            vm is not None and vm.run_id == run_id and vm.status not in ACTIVE_STATES and state not in FINAL_RUN_STATES
        )
        if stopped and vm is not None:  # without a final status: what the VM said last may be all there is
            vm_lines, cause = _vm_tail(settings, project, clients, vm, run_id)
            extra = {"vm_lines": vm_lines, "cause": cause}
            if vm_lines and not _output.state.quiet:
                _output.stderr().print(f"Last lines of VM {vm.name}:", highlight=False)
                for line in vm_lines:
                    _output.stderr().print(f"  {line}", markup=False, emoji=False, highlight=False, soft_wrap=True)
            if cause:
                _output.warn(f"VM {vm.name} stopped before run {run_id} finished: {cause}")
        if not lines and not extra.get("vm_lines"):
            if state is None:
                raise InputError(
                    f"No run {run_id} in gs://{store.bucket}/runs/: list the runs with `newsclf models list`"
                )
            _output.info(f"No log uploaded for run {run_id} yet ({store.logs_uri(run_id)})")
    data = {"run_id": run_id, "state": state, "source": source, "lines": lines, **extra}

    def render(console) -> None:
        for line in lines:
            console.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)

    _output.emit(data, render)


@app.command("stop")
def stop(
    delete: bool = typer.Option(False, "--delete", help="Delete the VM (and its boot disk) once stopped."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    poll_interval: float = typer.Option(2.0, "--poll-interval", min=0.05, help="Seconds between polls of the VM."),
    sweep: str | None = typer.Option(
        None,
        "--sweep",
        metavar="SWEEP_ID",
        help="Cancel this sweep's Batch job (its running trials stop, its VMs go) and wait until it is gone.",
    ),
) -> None:
    """Stop the training VM and wait until it is really stopped; --delete removes it.

    Stopping a VM in the middle of a job interrupts it: resume it later with
    `newsclf cloud run --resume RUN_ID`. Already stopped: nothing to do.

    Examples:

      newsclf cloud stop

      newsclf cloud stop --delete --yes

      newsclf cloud stop --sweep sweep-1a2b3c4d --yes
    """
    from newsclf.cloud.compute.lifecycle import stop_vm
    from newsclf.cloud.compute.vm import DOWN_STATES, find_vm
    from newsclf.cloud.fleet import is_busy

    if sweep is not None:  # the sweep's Batch job: Batch deletes its VMs
        from newsclf.cli import _cloud_sweep as _sweep

        if delete:
            raise typer.BadParameter("a sweep's VMs belong to its Batch job and go with it: drop --delete")
        _sweep.stop_sweep(sweep, yes=yes, poll_s=poll_interval, confirm=_confirm)
        return
    settings, project, clients, store = _compute(need_bucket=False)
    vm = find_vm(clients, project, settings.vm_name)
    if vm is None:
        data = {"vm": settings.vm_name, "zone": None, "before": None, "after": None, "deleted": False}
        _output.emit(
            data, lambda c: c.print(f"No VM {settings.vm_name} in project {project}: nothing to stop", highlight=False)
        )
        return
    if vm.status in DOWN_STATES and not delete:
        data = {"vm": vm.name, "zone": vm.zone, "before": vm.status, "after": vm.status, "deleted": False}
        _output.emit(data, lambda c: c.print(f"VM {vm.name} ({vm.zone}) is already stopped", highlight=False))
        return
    busy = is_busy(clients, store, vm)
    if (busy or delete) and not yes:
        what = f"{'Delete' if delete else 'Stop'} VM {vm.name} ({vm.zone})"
        if busy:
            what += f", interrupting run {vm.run_id}"
        _confirm(what)
    result = stop_vm(clients, project, vm, delete=delete, poll_s=poll_interval)
    data = {
        "vm": result.name,
        "zone": result.zone,
        "before": result.before,
        "after": result.after,
        "deleted": result.deleted,
    }

    def render(console) -> None:
        if result.deleted:
            console.print(f"Deleted VM {result.name} ({result.zone})", highlight=False)
        else:
            console.print(f"Stopped VM {result.name} ({result.zone}): {result.after}", highlight=False)
        if busy:
            console.print(f"Resume run {vm.run_id} later with: newsclf cloud run --resume {vm.run_id}", highlight=False)

    _output.emit(data, render)


# -- setup -----------------------------------------------------------------------------------------

_SETUP_STYLES = {"ok": "green", "created": "cyan", "missing": "red", "error": "red", "skipped": "dim"}


@app.command("setup")
def setup(
    project: str | None = typer.Option(None, "--project", help="Google Cloud project (default: NEWSCLF_GCP_PROJECT)."),
    bucket: str | None = typer.Option(None, "--bucket", help="Bucket name or gs:// URL (default: NEWSCLF_BUCKET)."),
    create: bool = typer.Option(
        True,
        "--create/--no-create",
        help="Create the bucket, the repository and the VMs' service account and grants when missing (--no-create: only check).",
    ),
) -> None:
    """Get a project ready for `cloud build` and `cloud run`, and say what is still missing.

    Checks each step and prints one row for it: the project (NEWSCLF_GCP_PROJECT or your
    Application Default Credentials), the bucket (created in NEWSCLF_REGION with uniform
    bucket-level access if missing), your object access to it, the Docker repository
    NEWSCLF_ARTIFACT_REPO in Artifact Registry (created if missing), and the Cloud Build,
    Compute Engine and Cloud Batch (sweeps) APIs; then the VMs' service account
    NEWSCLF_VM_SERVICE_ACCOUNT (created if missing) with one row per grant it needs (objects in
    the bucket, reading the repository, the W&B secret, writing logs, reporting to Batch) and
    whether you may create VMs that run as it. Safe to
    rerun: what exists is left alone. Exits 1 if any step is missing or failed, after
    showing every row with its fix.

    Examples:

      newsclf cloud setup --project my-project --bucket my-newsclf-bucket

      newsclf cloud setup --no-create --json
    """
    from newsclf.cloud.setup.run import run_setup
    from newsclf.config import get_settings

    settings = get_settings()
    update = {key: value for key, value in (("gcp_project", project), ("bucket", bucket)) if value}
    if update:
        settings = settings.model_copy(update=update)
    report = run_setup(settings, create=create)
    message = report.summary()

    def render(console) -> None:
        from rich.markup import escape

        width = max(len(s.title) for s in report.steps)
        for s in report.steps:
            style = _SETUP_STYLES.get(s.status, "")
            console.print(
                f"[{style}]{s.status:<8}[/{style}] {escape(s.title):<{width}}  {escape(s.detail)}", highlight=False
            )
        if message is None:
            console.print("Ready: newsclf data push, then newsclf cloud build, then newsclf cloud run", highlight=False)

    _output.emit(report.to_dict(), render, exit_code=1 if message else 0, errors=[message] if message else None)
    if message:
        _output.emit_error(message, 1)
        raise typer.Exit(1)
