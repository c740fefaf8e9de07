"""`newsclf data`: prepare datasets and move them to and from Cloud Storage."""

from __future__ import annotations

from pathlib import Path

import typer

from newsclf.cli import _output

app = typer.Typer(help="Prepare datasets; push and pull them to and from Cloud Storage.", no_args_is_help=True)


# -- prepare ---------------------------------------------------------------------------------------


@app.command("prepare")
def prepare(
    fake: Path | None = typer.Option(None, "--fake", help="ISOT Fake.csv (columns title,text,subject,date)."),
    true: Path | None = typer.Option(None, "--true", help="ISOT True.csv (same layout)."),
    input_: Path | None = typer.Option(
        None, "--input", "-i", help="One CSV or JSONL file with text and label columns (instead of --fake/--true)."
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Use the small built-in demo corpus (synthetic, offline): for trying the tool."
    ),
    text_column: str = typer.Option("text", "--text-column", help="--input: column holding the article body."),
    title_column: str | None = typer.Option(
        None, "--title-column", help="--input: column holding the title (default: title, if the file has one)."
    ),
    label_column: str = typer.Option("label", "--label-column", help="--input: column holding the label."),
    label_map: str | None = typer.Option(
        None,
        "--label-map",
        help='--input: VALUE=fake|real|drop pairs, e.g. "FAKE=fake,REAL=real" or "1=fake,0=real" '
        "(case-insensitive; default: fake/real, and 0=fake, 1=real).",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (default: DATA_DIR/processed)."),
    no_title: bool = typer.Option(False, "--no-title", help="Use the body only, without the title."),
    keep_leaks: bool = typer.Option(
        False, "--keep-leaks", help="Keep Reuters datelines and image/source credits (label leaks) in the text."
    ),
    split: str = typer.Option("0.8,0.1,0.1", "--split", help="train,validation,test fractions."),
    seed: int | None = typer.Option(None, "--seed", help="Split seed (default: the seed setting, 42)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing prepared dataset in --out."),
) -> None:
    """Clean, deduplicate and split articles into train/validation/test parquet files.

    Text = title + body, with label leaks stripped (Reuters datelines,
    "Featured image via ..." credits); the subject column is never used.
    Empty, URL-only and duplicate articles are dropped, and so is every copy
    of an article found under both labels. Writes train.parquet,
    validation.parquet, test.parquet (columns text, label: 0=fake, 1=real)
    and manifest.json to DATA_DIR/processed (or --out).

    Examples:

      newsclf data prepare --fake Fake.csv --true True.csv

      newsclf data prepare --input news.jsonl --text-column body --label-map "FAKE=fake,REAL=real"

      newsclf data prepare --demo --out data/demo
    """
    from newsclf.config import get_settings
    from newsclf.data import Source, prepare_dataset
    from newsclf.errors import InputError

    given = [name for name, on in (("--fake/--true", fake or true), ("--input", input_), ("--demo", demo)) if on]
    if len(given) != 1:
        raise InputError(
            ("Pass only one of " + ", ".join(given) if given else "No input given")
            + ": use --fake Fake.csv --true True.csv, --input FILE, or --demo"
        )
    if (fake is None) != (true is None):
        missing = "--true True.csv" if true is None else "--fake Fake.csv"
        raise InputError(f"--fake and --true go together: add {missing}")
    settings = get_settings()
    out_dir = out if out is not None else settings.data_dir / "processed"
    seed = settings.seed if seed is None else seed
    if demo:
        from newsclf.demo import demo_source

        source = demo_source()
    elif input_ is not None:
        source = Source.file(
            input_, text_column=text_column, title_column=title_column, label_column=label_column, label_map=label_map
        )
    else:
        assert fake is not None and true is not None
        source = Source.isot(fake, true)
    result = prepare_dataset(
        source, out_dir, split=split, seed=seed, title=not no_title, keep_leaks=keep_leaks, force=force
    )

    data = result.to_dict()

    def render(console) -> None:
        from rich.table import Table

        table = Table("split", "fake", "real", "total", box=None, title=f"Prepared {result.out_dir}")
        for name, c in data["splits"].items():
            table.add_row(name, f"{c['fake']:,}", f"{c['real']:,}", f"{c['total']:,}")
        r = data["rows_read"]
        table.add_section()
        table.add_row("read", f"{r['fake']:,}", f"{r['real']:,}", f"{r['total']:,}")
        console.print(table)
        dropped = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in data["dropped"].items() if v) or "none"
        console.print(f"Dropped: {dropped}", highlight=False)
        leaks = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in data["leaks_stripped"].items() if v)
        if leaks:
            console.print(f"Leaks stripped: {leaks}", highlight=False)
        console.print(f"Manifest sha256 {data['manifest_sha256'][:12]}", highlight=False)

    _output.emit(data, render)


# -- push / pull (Cloud Storage) -------------------------------------------------------------------


def _bucket_opt():
    from newsclf.cli._transfer import bucket_option

    return bucket_option()


@app.command("push")
def push(
    raw: Path | None = typer.Option(
        None, "--raw", help="Raw data directory (default: DATA_DIR/raw).", show_default=False
    ),
    processed: Path | None = typer.Option(
        None, "--processed", help="Prepared dataset directory (default: DATA_DIR/processed).", show_default=False
    ),
    bucket: str | None = _bucket_opt(),
) -> None:
    """Upload the raw and prepared data to gs://BUCKET/data/raw/ and data/processed/.

    Without options, pushes whichever of DATA_DIR/raw and DATA_DIR/processed
    exist; with --raw or --processed, only those. Files whose size and crc32c
    already match are skipped; an object someone else changed meanwhile is
    never overwritten. manifest.json goes last.

    Example:  newsclf data push --processed data/processed
    """
    from newsclf.cli._transfer import connect, summary_line, transfer_progress
    from newsclf.cloud import layout
    from newsclf.cloud.storage.upload import upload_dir
    from newsclf.config import get_settings
    from newsclf.data import MANIFEST, check_processed
    from newsclf.errors import InputError

    settings = get_settings()
    if raw is None and processed is None:
        dirs = {"raw": settings.data_dir / "raw", "processed": settings.data_dir / "processed"}
        dirs = {k: d for k, d in dirs.items() if d.is_dir()}
        if not dirs:
            raise InputError(
                f"Nothing to push: no {settings.data_dir}/raw/ or {settings.data_dir}/processed/; run "
                "`newsclf data prepare` first or pass --raw/--processed DIR"
            )
    else:
        dirs = {k: d for k, d in (("raw", raw), ("processed", processed)) if d is not None}
        for d in dirs.values():
            if not d.is_dir():
                raise InputError(f"{d}/ is not a directory: pass an existing one")
    if "processed" in dirs:
        check_processed(dirs["processed"])  # a half-prepared dataset is not worth sharing
    _, name, client = connect(bucket)
    transfers = []
    with transfer_progress() as make:
        for kind, local in dirs.items():
            prefix = layout.data_prefix(kind)  # type: ignore[arg-type]
            last = (MANIFEST,) if kind == "processed" else ()
            r = upload_dir(client, name, local, prefix, last=last, progress=make(f"push {kind}"))
            transfers.append(
                {"kind": kind, "source": str(local), "destination": layout.uri(name, prefix), **r.to_dict()}
            )
    data = _transfer_summary(name, transfers)

    def render(console) -> None:
        for t in transfers:
            console.print(summary_line(f"{t['source']}/ -> {t['destination']}", t), highlight=False)

    _output.emit(data, render)


@app.command("pull")
def pull(
    raw: bool = typer.Option(False, "--raw", help="Pull data/raw/ (default: both raw and processed)."),
    processed: bool = typer.Option(False, "--processed", help="Pull data/processed/."),
    dest: Path | None = typer.Option(
        None, "--dest", help="Directory to put raw/ and processed/ in (default: DATA_DIR).", show_default=False
    ),
    bucket: str | None = _bucket_opt(),
) -> None:
    """Download gs://BUCKET/data/raw/ and data/processed/ into DATA_DIR (or --dest).

    Every file is crc32c-verified and renamed into place only when complete;
    unchanged files are skipped and an interrupted pull resumes where it
    stopped. manifest.json comes last.

    Example:  newsclf data pull --processed
    """
    from newsclf.cli._transfer import connect, summary_line, transfer_progress
    from newsclf.cloud import layout
    from newsclf.cloud.storage.client import list_objects
    from newsclf.cloud.storage.download import download_prefix
    from newsclf.data import MANIFEST
    from newsclf.errors import CloudError

    settings, name, client = connect(bucket)
    base = dest if dest is not None else settings.data_dir
    kinds = [k for k, on in (("raw", raw), ("processed", processed)) if on] or ["raw", "processed"]
    explicit = raw or processed
    listings = {k: list_objects(client, name, layout.data_prefix(k)) for k in kinds}  # type: ignore[arg-type]
    empty = [k for k in kinds if not listings[k]]
    if len(empty) == len(kinds) or (explicit and empty):
        where = " or ".join(layout.uri(name, layout.data_prefix(k)) for k in empty)  # type: ignore[arg-type]
        raise CloudError(f"Nothing under {where}: push data there first with `newsclf data push`")
    transfers = []
    with transfer_progress() as make:
        for kind in kinds:
            if not listings[kind]:
                continue
            prefix = layout.data_prefix(kind)  # type: ignore[arg-type]
            local = base / kind
            last = (MANIFEST,) if kind == "processed" else ()
            r = download_prefix(
                client, name, prefix, local, last=last, listing=listings[kind], progress=make(f"pull {kind}")
            )
            transfers.append(
                {"kind": kind, "source": layout.uri(name, prefix), "destination": str(local), **r.to_dict()}
            )
    data = _transfer_summary(name, transfers)

    def render(console) -> None:
        for t in transfers:
            console.print(summary_line(f"{t['source']} -> {t['destination']}/", t), highlight=False)

    _output.emit(data, render)


def _transfer_summary(bucket: str, transfers: list[dict]) -> dict:
    totals = {k: sum(t[k] for t in transfers) for k in ("files_transferred", "files_skipped", "bytes")}
    return {
        "bucket": bucket,
        "transfers": transfers,
        **totals,
        "seconds": round(sum(t["seconds"] for t in transfers), 3),
    }
