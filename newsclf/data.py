"""Datasets: the processed layout every command shares, and `prepare` that builds it."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import logging
import os
import random
import re
import shutil
import tempfile
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsclf.errors import InputError

if TYPE_CHECKING:
    from datasets import DatasetDict

log = logging.getLogger(__name__)

LABELS = ("fake", "real")  # label id 0 = fake, 1 = real
SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"


def split_path(processed_dir: Path, split: str) -> Path:
    return Path(processed_dir) / f"{split}.parquet"


def manifest_hash(processed_dir: Path) -> str:
    """sha256 of manifest.json: identifies the exact prepared dataset a model was trained on."""
    return hashlib.sha256((Path(processed_dir) / MANIFEST).read_bytes()).hexdigest()


def read_manifest(processed_dir: Path) -> dict:
    return json.loads((Path(processed_dir) / MANIFEST).read_text())


def check_processed(processed_dir: Path) -> None:
    """Raise one actionable error if processed_dir is not a prepared dataset."""
    missing = [s for s in SPLITS if not split_path(processed_dir, s).is_file()]
    if not (Path(processed_dir) / MANIFEST).is_file():
        missing.append(MANIFEST)
    if missing:
        raise InputError(
            f"No prepared dataset in {processed_dir}/ (missing {', '.join(missing)}): run "
            "`newsclf data prepare --fake Fake.csv --true True.csv`, `newsclf data pull`, "
            "or try `newsclf train --demo`"
        )


def load_processed(processed_dir: Path) -> DatasetDict:
    """The train/validation/test splits as a datasets.DatasetDict with columns text, label."""
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    check_processed(processed_dir)
    # in memory, straight from parquet: no copy into the datasets cache
    return DatasetDict({s: Dataset(pq.read_table(split_path(processed_dir, s))) for s in SPLITS})


# --------------------------------------------------------------------------------------------------
# prepare: raw articles -> cleaned, deduplicated, stratified train/validation/test parquet splits

FORMAT = "newsclf-processed/1"
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
MIN_PER_CLASS = 3  # one article of each class in each split
TITLE_SEP = "\n"  # between title and body: whitespace to a tokenizer, but keeps the boundary visible
DROP_REASONS = ("empty_text", "url_only_text", "only_boilerplate", "label_dropped", "duplicate",
                "conflicting_labels")  # fmt: skip
LEAK_KINDS = ("correction_note", "twitter_boilerplate", "reuters_dateline", "dateline",
              "image_credit", "source_credit")  # fmt: skip
LABEL_TARGETS = {"fake": 0, "0": 0, "real": 1, "1": 1, "drop": None}
DEFAULT_LABEL_MAP = {"fake": 0, "real": 1, "0": 0, "1": 1}  # matched case-insensitively

# Label leaks of the ISOT data (every pattern was found in the real rows; see tests/test_data.py).
# They are stripped from every article whatever its label: a model must never see them.
_CORRECTION_NOTE = re.compile(  # "(This Nov. 24 story has been refiled to correct ...) "
    r"^\((?=[^()]{0,600}?\b(?:correct|refil|clarif|updat)\w*)[^()]{0,600}\)\s*", re.I
)
_TWITTER_BOILERPLATE = re.compile(  # Reuters' preface to Trump's tweets
    r"^The following statements? (?:was|were) posted to the verified Twitter accounts? of .{0,200}?"
    r"Reuters has not edited the statements? or confirmed (?:its|their) accuracy\.\s*",
    re.I,
)
_REUTERS_DATELINE = re.compile(  # "[By NAME ]LONDON/BEIJING (Reuters) - ", "(Reuters on Friday ) -", "(IFR) -"
    r"^[^()]{0,160}?\(\s*(?:Thomson Reuters Foundation|Reuters\b[^()]{0,40}|IFR)\s*\)\s*[-—–:]*\s*"
)
_PLAIN_DATELINE = re.compile(  # "BEIJING - ", "CHARLOTTE, North Carolina - " (no agency named)
    r"^(?!(?:BREAKING|WATCH|UPDATE|EXCLUSIVE|VIDEO|WOW|BOOM|WHOA|LOL|OMG)\b)"
    r"[A-Z][A-Z.'’&]+(?:[ /-][A-Z][A-Z.'’&]+)*(?:, [A-Z][\w.'’]*(?: [A-Z][\w.'’]*){0,3})?\s+[-—–]+\s+"
)
# The trailer patterns start with literals (no leading \b or lookbehind) so that re can skip ahead
# quickly: they run on every article.
_IMAGE_CREDIT = re.compile(  # "Featured image via X/Getty Images", "...2016Featured", "Photo by X", "Image credit: X"
    r"Featured(?:\s+(?i:image|photo|picture|img)s?\b.*)?$"
    r"|(?:[Ff]eature|FEATURE)[Dd]?\s+(?i:image|photo|picture|img)s?\b.*$"
    r"|(?:Image|Photo|Picture|IMAGE|PHOTO)s?\s+(?i:credit|courtesy|via|by|from)\b.*$"
    r"|(?:image|photo|picture)s?\s+(?:credit|courtesy)\b.*$"
    r"|Getty Images\b.*$"
)
_SOURCE_CREDIT = re.compile(  # "Via: Breitbart News", "...usVia: WND" (glued), "Read more: NYP"
    r"(?:(?:via(?<![A-Za-z]via)|Via|VIA|Read more|Read More|READ MORE|For entire story|Source)\s*:\s*\S.{0,100}"
    r"|READ M+ORE\b[^:]{0,80}:.{0,200})$"  # "READ MORE SYRIA NEWS AT: 21st Century Wire Syria Files"
)
_WIRE_FOOTER = re.compile(  # 21st Century Wire's "GET THE FULL STORY: 21st Century Wire X Files" and co.
    r"(?:[A-Z][A-Z0-9 ,'’&-]{2,80}:\s*21(?:st|ST) Century Wire\b.{0,200}"
    r"|Get \d+% off a 21WIRE.{0,200}"
    r"|SUPPORT (?:OUR WORK|21WIRE)\b.{0,80})$"
)
_TRAILERS = (  # (leak kind, pattern, substring that must be in the tail for the pattern to be tried)
    ("image_credit", _IMAGE_CREDIT, ""),
    ("source_credit", _SOURCE_CREDIT, ":"),
    ("source_credit", _WIRE_FOOTER, "21"),
)
_HEADS = (  # (leak kind, pattern), tried in this order at the start of the body
    ("correction_note", _CORRECTION_NOTE),
    ("twitter_boilerplate", _TWITTER_BOILERPLATE),
    ("reuters_dateline", _REUTERS_DATELINE),
    ("dateline", _PLAIN_DATELINE),
)
_TAIL = 300  # credits are searched for in the last characters only: they are trailers
_URLS_ONLY = re.compile(r"(?:(?:https?://|www\.|pic\.twitter\.com/)\S*\s*)+")


# control characters that are not whitespace (NUL from binary junk, ESC, DEL...): str.split() keeps them
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]+")


def normalize_ws(s: str) -> str:
    """Collapse every run of whitespace (including non-breaking spaces) to one space; strip the ends.

    Control characters that are not whitespace (NUL, ESC, DEL, ...) are removed.
    """
    out = " ".join(s.split())
    if not out.isprintable():  # fast: only articles with something unprintable pay for the regex
        out = " ".join(_CONTROL.sub("", out).split())
    return out


def strip_leaks(body: str) -> tuple[str, list[str]]:
    """Remove the known label leaks from a whitespace-normalised article body.

    Returns the cleaned body and the kinds of leak found (see LEAK_KINDS).
    """
    found: list[str] = []
    for _ in range(3):  # the correction note comes before or after the dateline
        before = body
        for kind, pattern in _HEADS:
            if kind in found or (kind == "dateline" and "reuters_dateline" in found):
                continue  # one of each; "WASHINGTON (Reuters) - U.S. - ..." keeps "U.S. - "
            m = pattern.match(body)
            if m:
                body = body[m.end() :]
                found.append(kind)
        if body == before:
            break
    for _ in range(4):  # "... Via: Daily Caller Featured image via ..." has two trailers
        cut = len(body)
        start = max(0, len(body) - _TAIL)
        tail = body[start:]
        for kind, pattern, hint in _TRAILERS:
            if hint not in tail:
                continue
            m = pattern.search(body, start)
            if m and m.start() < cut:
                cut = m.start()
                if kind not in found:
                    found.append(kind)
        if cut == len(body):
            break
        body = body[:cut].rstrip(" |/-—–:")
    return body.strip(), found


def article_text(title: str | None, body: str, *, strip: bool = True) -> str:
    """The model input for one article, exactly as `prepare` builds it (also for predict)."""
    body = normalize_ws(body)
    if strip:
        body, _ = strip_leaks(body)
    title = normalize_ws(title or "")
    return f"{title}{TITLE_SEP}{body}" if title else body


def parse_label_map(spec: str | None) -> dict[str, int | None]:
    """`"FAKE=fake,REAL=real"` / `"0=real,1=fake"` / `"satire=drop"` -> {value: 0|1|None (drop)}."""
    if spec is None or not spec.strip():
        return dict(DEFAULT_LABEL_MAP)
    out: dict[str, int | None] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        value, eq, target = item.rpartition("=")
        if not eq or not value.strip():
            raise InputError(
                f"Bad --label-map entry {item.strip()!r}: write VALUE=fake|real|drop pairs, "
                'e.g. --label-map "FAKE=fake,REAL=real"'
            )
        t = target.strip().lower()
        if t not in LABEL_TARGETS:
            raise InputError(
                f"Bad --label-map target {target.strip()!r} for {value.strip()!r}: use fake, real, 0, 1 or drop, "
                'e.g. --label-map "FAKE=fake,REAL=real"'
            )
        out[value.strip().casefold()] = LABEL_TARGETS[t]
    return out


def parse_split(spec: str | tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """`"0.8,0.1,0.1"` -> (0.8, 0.1, 0.1): three positive fractions summing to 1."""
    try:
        parts = [float(x) for x in (spec.split(",") if isinstance(spec, str) else spec)]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(not (0 < p < 1) for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise InputError(
            f"Bad --split {spec if isinstance(spec, str) else ','.join(map(str, spec))!r}: give three "
            "positive train,validation,test fractions that sum to 1, e.g. --split 0.8,0.1,0.1"
        )
    return parts[0], parts[1], parts[2]


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class _Table:
    name: str  # the file name, as errors and the manifest show it
    sha256: str
    columns: list[str]
    rows: list[tuple[int, list[str]]]  # (line number, values in `columns` order)

    def column(self, name: str) -> int:
        return self.columns.index(name)


def _read_bytes(path: Path, flag: str) -> bytes:
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input file {path} not found: check the {flag} path")
    if not path.is_file():
        raise InputError(f"Input {path} is not a file: pass a CSV or JSONL file to {flag}")
    data = path.read_bytes()
    if not data.lstrip(b"\xef\xbb\xbf \t\r\n"):
        raise InputError(f"Input file {path} is empty: pass a file with a header row and articles to {flag}")
    return data


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{path} is not UTF-8 (invalid byte 0x{data[e.start]:02x} on line {line}): re-save it as UTF-8, "
            f"e.g. `iconv -f latin1 -t utf-8 {path} > fixed.csv`"
        ) from None


def _read_csv(path: Path, data: bytes) -> _Table:
    text = _decode(path, data)
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 1 << 30))  # ISOT has 50k-character articles; the default is 128 KiB
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        header = next(reader, None)
        if not header:
            raise InputError(f"{path} has no header row: the first line must name the columns")
        width = len(header)
        line = reader.line_num + 1
        for row in reader:
            if len(row) != width:
                if not row:  # a blank line
                    line = reader.line_num + 1
                    continue
                raise InputError(
                    f"{path} line {line}: unparseable CSV ({len(row)} fields, the header has {width}): "
                    "fix the quoting on that line"
                )
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as e:
        raise InputError(f"{path} line {line}: unparseable CSV ({e}): fix the quoting on that line") from None
    finally:
        csv.field_size_limit(limit)
    if not rows:
        raise InputError(f"{path} has a header but no rows: pass a file with articles in it")
    sha = hashlib.sha256(data).hexdigest()
    return _Table(Path(path).name, sha, [h.strip() for h in header], rows)


def _read_jsonl(path: Path, data: bytes) -> _Table:
    text = _decode(path, data)
    objects: list[tuple[int, dict]] = []
    columns: dict[str, None] = {}
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} line {n}: not valid JSON ({e.msg}): each line must be one JSON object") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path} line {n}: not a JSON object: each line must be one {{...}} object")
        for k in obj:
            columns.setdefault(k, None)
        objects.append((n, obj))
    cols = list(columns)

    def cell(v: object) -> str:
        return "" if v is None else v if isinstance(v, str) else json.dumps(v)

    rows = [(n, [cell(o.get(c)) for c in cols]) for n, o in objects]
    return _Table(Path(path).name, hashlib.sha256(data).hexdigest(), cols, rows)


def _read_table(path: Path, flag: str) -> _Table:
    data = _read_bytes(path, flag)
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        is_json = True
    elif suffix in (".csv", ".txt"):
        is_json = False
    else:
        is_json = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"
    return _read_jsonl(path, data) if is_json else _read_csv(path, data)


def _require(table: _Table, path: Path, needed: list[tuple[str, str]], hint: str | None = None) -> None:
    """needed: (column, flag that names it); one error naming every missing column and those found."""
    missing = [(c, flag) for c, flag in needed if c not in table.columns]
    if missing:
        names = ", ".join(repr(c) for c, _ in missing)
        found = ", ".join(table.columns) or "none"
        fix = hint or "name the right one" + ("s" if len(missing) > 1 else "") + " with " + " and ".join(
            f"{flag} NAME" for _, flag in missing
        )
        raise InputError(f"{path} has no column{'s' if len(missing) > 1 else ''} {names} (found: {found}): {fix}")


# -- the pipeline ----------------------------------------------------------------------------------


@dataclass
class Source:
    """Where the articles come from: Source.isot(...), Source.file(...) or newsclf.demo.demo_source()."""

    kind: str  # "isot" | "input" | "demo"
    paths: tuple[Path, ...] = ()
    text_column: str = "text"
    title_column: str | None = "title"  # None: none (for --input: "title" if the file has one)
    label_column: str = "label"
    label_map: str | None = None
    articles: tuple[tuple[str, str, int], ...] = ()  # (title, text, label) for kind="demo"
    description: dict = field(default_factory=dict)

    @classmethod
    def isot(cls, fake: Path, true: Path) -> Source:
        return cls("isot", (Path(fake), Path(true)))

    @classmethod
    def file(
        cls,
        path: Path,
        *,
        text_column: str = "text",
        title_column: str | None = None,
        label_column: str = "label",
        label_map: str | None = None,
    ) -> Source:
        return cls("input", (Path(path),), text_column, title_column, label_column, label_map)


@dataclass
class PrepareResult:
    """What `prepare_dataset` wrote: the directory and the counts recorded in its manifest."""

    out_dir: Path
    manifest: dict
    manifest_sha256: str

    COUNT_KEYS = ("rows_read", "dropped", "leaks_stripped", "splits", "rows_written")

    @property
    def counts(self) -> dict:
        return {k: self.manifest[k] for k in self.COUNT_KEYS}

    @property
    def splits(self) -> dict:
        return self.manifest["splits"]

    @property
    def dropped(self) -> dict:
        return self.manifest["dropped"]

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "manifest_sha256": self.manifest_sha256, **self.counts}


def _load_rows(source: Source, use_title: bool) -> tuple[list[tuple[str, str, int | None]], list[dict], dict]:
    """(title, body, label or None=drop) per row, the manifest's input entries, and resolved options."""
    rows: list[tuple[str, str, int | None]] = []
    inputs: list[dict] = []
    options: dict = {}
    if source.kind == "demo":
        rows = [(t, b, lab) for t, b, lab in source.articles]
        inputs.append(dict(source.description))
        options.update(title_column="title" if use_title else None, text_column="text")
    elif source.kind == "isot":
        options.update(
            title_column="title" if use_title else None, text_column="text", ignored_columns=["subject", "date"]
        )
        for path, flag, label in zip(source.paths, ("--fake", "--true"), (0, 1)):
            table = _read_table(path, flag)
            hint = "expected the ISOT layout title,text,subject,date (or use --input FILE --text-column NAME)"
            _require(table, path, [("title", flag), ("text", flag)], hint)
            tc, xc = table.column("title"), table.column("text")
            rows.extend((r[tc] if use_title else "", r[xc], label) for _, r in table.rows)
            inputs.append({"name": table.name, "role": LABELS[label], "sha256": table.sha256, "rows": len(table.rows)})
    elif source.kind == "input":
        (path,) = source.paths
        table = _read_table(path, "--input")
        title_col = source.title_column
        if title_col is None and use_title and "title" in table.columns:
            title_col = "title"
        needed = [(source.text_column, "--text-column"), (source.label_column, "--label-column")]
        if title_col is not None and use_title:
            needed.append((title_col, "--title-column"))
        _require(table, path, needed)
        mapping = parse_label_map(source.label_map)
        xi, li = table.column(source.text_column), table.column(source.label_column)
        ti = table.column(title_col) if (title_col is not None and use_title) else None
        unknown: dict[str, list] = {}  # casefolded value -> [value as written, rows, first line]
        for line, r in table.rows:
            raw = r[li].strip()
            key = raw.casefold()
            if key not in mapping:
                seen = unknown.setdefault(key, [raw, 0, line])
                seen[1] += 1
                continue
            rows.append((r[ti] if ti is not None else "", r[xi], mapping[key]))
        if "" in unknown:
            _, count, line = unknown[""]
            raise InputError(
                f"{path}: {count} row{'s have' if count > 1 else ' has'} an empty {source.label_column!r} "
                f"(first on line {line}): fill in the labels or remove those rows"
            )
        if unknown:
            value, count, line = next(iter(unknown.values()))
            more = f" and {len(unknown) - 1} other value(s)" if len(unknown) > 1 else ""
            given = source.label_map.strip().strip(",") if source.label_map else "fake=fake,real=real"
            raise InputError(
                f"{path}: label {value!r} ({count} row{'s' if count > 1 else ''}, first on line {line}){more} "
                f"is not in the label map {_show_map(mapping)}: map it to fake, real or drop, "
                f'e.g. --label-map "{given},{value}=drop"'
            )
        inputs.append({"name": table.name, "sha256": table.sha256, "rows": len(table.rows)})
        options.update(
            text_column=source.text_column,
            title_column=title_col if use_title else None,
            label_column=source.label_column,
            label_map={k: (LABELS[v] if v is not None else "drop") for k, v in mapping.items()},
        )
    else:  # pragma: no cover - programming error
        raise ValueError(source.kind)
    return rows, inputs, options


def _show_map(mapping: dict[str, int | None]) -> str:
    return "{" + ", ".join(f"{k}={LABELS[v] if v is not None else 'drop'}" for k, v in mapping.items()) + "}"


def _clean(
    rows: list[tuple[str, str, int | None]], *, strip: bool
) -> tuple[list[tuple[str, int]], dict[str, int], dict[str, int]]:
    """Normalise, strip leaks, drop empty/URL-only bodies, deduplicate; returns kept (text, label)."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    leaks = dict.fromkeys(LEAK_KINDS, 0)
    cands: list[tuple[str, str, int]] = []  # (dedup key, text, label)
    labels_of: dict[str, int] = {}  # key -> label, or -1 when the article appears under both
    for title, body, label in rows:
        if label is None:
            dropped["label_dropped"] += 1
            continue
        body = normalize_ws(body)
        if not body:
            dropped["empty_text"] += 1
            continue
        if _URLS_ONLY.fullmatch(body):
            dropped["url_only_text"] += 1
            continue
        if strip:
            body, kinds = strip_leaks(body)
            for k in kinds:
                leaks[k] += 1
            if not body or _URLS_ONLY.fullmatch(body):
                dropped["only_boilerplate"] += 1
                continue
        title = normalize_ws(title)
        text = f"{title}{TITLE_SEP}{body}" if title else body
        key = text.casefold()
        if labels_of.setdefault(key, label) != label:
            labels_of[key] = -1
        cands.append((key, text, label))
    kept: list[tuple[str, int]] = []
    seen: set[str] = set()
    for key, text, label in cands:
        if labels_of[key] == -1:  # every copy goes: we cannot tell which label is right
            dropped["conflicting_labels"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            kept.append((text, label))
    return kept, dropped, leaks


def _show_dropped(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dropped.items() if v) or "none"


def _split(
    kept: list[tuple[str, int]],
    fractions: tuple[float, float, float],
    seed: int,
    source: Source,
    source_dropped: dict[str, int],
) -> dict[str, list[tuple[str, int]]]:
    """Stratified: each class is shuffled with `seed` and cut by `fractions`; then each split is mixed."""
    by_class: dict[int, list[int]] = {0: [], 1: []}
    for i, (_, label) in enumerate(kept):
        by_class[label].append(i)
    if not kept:
        raise InputError(
            "No articles are left after cleaning (" + _show_dropped(source_dropped) + "): check the input files"
        )
    for label, idx in by_class.items():
        if not idx:
            other = LABELS[1 - label]
            where = {"isot": f"the {('--fake', '--true')[label]} file", "input": "the labels and --label-map"}
            raise InputError(
                f"Only {other} articles are left after cleaning (0 {LABELS[label]}; dropped: "
                f"{_show_dropped(source_dropped)}): both classes are needed; "
                f"check {where.get(source.kind, 'the input')}"
            )
        if len(idx) < MIN_PER_CLASS:
            raise InputError(
                f"Only {len(idx)} {LABELS[label]} article(s) are left after cleaning: at least {MIN_PER_CLASS} "
                "per class are needed to fill train, validation and test; add more articles"
            )
    rng = random.Random(seed)
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label in (0, 1):
        idx = by_class[label]
        rng.shuffle(idx)
        n = len(idx)
        n_val = max(1, int(n * fractions[1] + 0.5))
        n_test = max(1, int(n * fractions[2] + 0.5))
        while n - n_val - n_test < 1:  # tiny classes: train keeps at least one
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        n_train = n - n_val - n_test
        parts["train"] += idx[:n_train]
        parts["validation"] += idx[n_train : n_train + n_val]
        parts["test"] += idx[n_train + n_val :]
    for s in SPLITS:
        rng.shuffle(parts[s])  # classes interleaved, not fake-then-real
    return {s: [kept[i] for i in parts[s]] for s in SPLITS}


def _class_counts(rows: list[tuple[str, int]]) -> dict[str, int]:
    n_real = sum(label for _, label in rows)
    return {"fake": len(rows) - n_real, "real": n_real, "total": len(rows)}


def _arrow_columns(rows: list[tuple[str, int]]) -> tuple[Any, Any]:
    """(text, label) arrow arrays built from raw buffers: pa.array() on Python objects would import
    pandas (1-2 s) just to check that the list is not a DataFrame."""
    import pyarrow as pa

    encoded = [t.encode("utf-8") for t, _ in rows]
    labels = [lab for _, lab in rows]
    if sum(map(len, encoded)) >= 2**31:  # over 2 GiB of text overflows int32 offsets: pyarrow chunks it
        return pa.array([t for t, _ in rows], type=pa.string()), pa.array(labels, type=pa.int64())
    offsets = array("i", [0, *itertools.accumulate(map(len, encoded))])
    n = len(rows)
    buffers = [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded))]
    text = pa.Array.from_buffers(pa.string(), n, buffers)
    label = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(array("q", labels).tobytes())])
    text.validate(full=True)
    return text, label


def _write_parquet(rows: list[tuple[str, int]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    text, label = _arrow_columns(rows)
    table = pa.Table.from_arrays([text, label], names=["text", "label"])
    # no timestamps in parquet metadata: same rows -> same bytes (pyarrow version held constant)
    pq.write_table(table, path, compression="zstd")


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.is_symlink() or out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"{out_dir} exists and is not a directory: choose another --out DIR")
        if not force:
            raise InputError(
                f"Output directory {out_dir} already exists: pass --force to replace it, or choose another --out DIR"
            )
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise InputError(
                f"{out_dir} is not a prepared dataset (no {MANIFEST}), so --force will not replace it: "
                "choose another --out DIR"
            )


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished tmp dir into place; an old dataset is swapped out, then deleted."""
    if out_dir.is_symlink() or out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(old, out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def prepare_dataset(
    source: Source,
    out_dir: Path,
    *,
    split: tuple[float, float, float] | str = DEFAULT_SPLIT,
    seed: int = 42,
    title: bool = True,
    keep_leaks: bool = False,
    force: bool = False,
) -> PrepareResult:
    """Clean, deduplicate and split `source` into out_dir (train/validation/test parquet + manifest).

    Everything is validated and computed in memory first; the directory is written to a temporary
    sibling and renamed into place, so a failure leaves out_dir as it was.
    """
    out_dir = Path(out_dir)
    fractions = parse_split(split)
    with contextlib.ExitStack() as lock:
        if out_dir.parent.is_dir():  # else it is created, and locked, only once there is something to write
            _enter_lock(lock, out_dir)
        return _prepare(source, out_dir, lock, fractions, seed=seed, title=title, keep_leaks=keep_leaks, force=force)


def _enter_lock(stack: contextlib.ExitStack, out_dir: Path) -> None:
    """One writer per dataset folder: a second `data prepare` to the same --out fails naming the first."""
    from newsclf import locks

    what, fix = f"Dataset folder {out_dir}", "wait for it to finish (or stop it), or choose another --out DIR"
    try:
        stack.enter_context(locks.hold(out_dir, what=what, fix=fix))
    except OSError as e:
        raise _unwritable(out_dir.parent, e) from None


def _unwritable(folder: Path, e: OSError) -> InputError:
    return InputError(f"Cannot write to {folder}/ ({e.strerror or e}): choose another --out DIR or fix its permissions")


def _remove_stale(out_dir: Path) -> None:
    """Temporary folders of earlier writers of out_dir that were killed (we hold its lock: they are gone)."""
    stale = re.compile(rf"\.{re.escape(out_dir.name)}\.(?:tmp-[a-z0-9_]{{8}}|old-[0-9a-f]{{8}})")
    for p in out_dir.parent.iterdir():
        if stale.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            log.debug("Removing %s, left by a killed `data prepare`", p)
            shutil.rmtree(p, ignore_errors=True)


def _prepare(
    source: Source,
    out_dir: Path,
    lock: contextlib.ExitStack,
    fractions: tuple[float, float, float],
    *,
    seed: int,
    title: bool,
    keep_leaks: bool,
    force: bool,
) -> PrepareResult:
    _check_out_dir(out_dir, force)
    rows, inputs, options = _load_rows(source, title)
    n_real = sum(1 for _, _, lab in rows if lab == 1)
    n_fake = sum(1 for _, _, lab in rows if lab == 0)
    kept, dropped, leaks = _clean(rows, strip=not keep_leaks)
    splits = _split(kept, fractions, seed, source, dropped)
    from newsclf import __version__

    manifest = {
        "format": FORMAT,
        "newsclf_version": __version__,
        "source": source.kind,
        "inputs": inputs,
        "options": {
            **options,
            "title": title,
            "strip_leaks": not keep_leaks,
            "split": list(fractions),
            "seed": seed,
        },
        "columns": {"text": "string", "label": "int64"},
        "labels": {str(i): name for i, name in enumerate(LABELS)},
        "rows_read": {"fake": n_fake, "real": n_real, "total": len(rows)},
        "dropped": dropped,
        "leaks_stripped": leaks if not keep_leaks else {},
        "splits": {s: _class_counts(splits[s]) for s in SPLITS},
        "rows_written": len(kept),
    }
    manifest_bytes = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()

    try:
        if not out_dir.parent.is_dir():
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            _enter_lock(lock, out_dir)
        _check_out_dir(out_dir, force)  # again: something else may have made it while we worked
        _remove_stale(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as e:
        raise _unwritable(out_dir.parent, e) from None
    try:
        for s in SPLITS:
            _write_parquet(splits[s], split_path(tmp, s))
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _publish(tmp, out_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):  # a full disk, a folder made read-only meanwhile
            raise _unwritable(out_dir.parent, e) from None
        raise
    log.debug("Prepared %d articles into %s", len(kept), out_dir)
    return PrepareResult(out_dir, manifest, hashlib.sha256(manifest_bytes).hexdigest())
