"""The build context packed deterministically (same tree, same bytes, same sha256) and named by its hash."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from newsclf.cloud import layout
from newsclf.cloud.cloudbuild.ignore import DockerIgnore, GitIgnore
from newsclf.errors import InputError

SOURCE_MTIME = 315619200  # 1980-01-02: every archived file's mtime; zip-safe in any time zone
BIG_SOURCE_BYTES = 50 * 1024**2  # warn: something large slipped past .dockerignore
ALWAYS_SENT = ("Dockerfile", ".dockerignore")  # docker sends these whatever the ignore files say


@dataclass
class PackedSource:
    """A deterministic .tar.gz of the build context: same tree, same bytes, same sha256."""

    path: Path
    sha256: str
    size: int
    files: list[str] = field(default_factory=list)

    @property
    def object_name(self) -> str:
        return layout.build_source(self.sha256)


def source_files(root: Path) -> list[str]:
    """The paths (sorted, `/`-separated, relative to root) that go into the build context."""
    docker = DockerIgnore.read(root / ".dockerignore")
    gcloud = GitIgnore.read(root / ".gcloudignore")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if os.path.islink(os.path.join(dirpath, name)):
                filenames.append(name)  # a link to a directory is archived as a link
                continue
            if gcloud.excluded(rel, is_dir=True):
                continue
            if docker.excluded(rel) and not docker.may_include_below(rel):
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                continue  # sockets, fifos: nothing docker could use
            if rel in ALWAYS_SENT:
                found.append(rel)
            elif not docker.excluded(rel) and not gcloud.excluded(rel, is_dir=False):
                found.append(rel)
    return sorted(found)


def _tarinfo(root: Path, rel: str) -> tarfile.TarInfo:
    full = root / rel
    st = os.lstat(full)
    info = tarfile.TarInfo(rel)
    info.mtime = SOURCE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
        info.mode = 0o777
    else:
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644  # only the executable bit survives
    return info


def pack_source(root: Path, dest_dir: Path) -> PackedSource:
    """Pack the build context of `root` into `dest_dir`/source.tar.gz: sorted entries, fixed
    mtime/owner/mode, gzip header mtime 0, so the same tree always gives the same sha256."""
    root = Path(root)
    if not (root / "Dockerfile").is_file():
        raise InputError(
            f"No Dockerfile in {root}: pass --source a newsclf project directory, or leave --source out "
            "to build the installed newsclf"
        )
    files = source_files(root)
    out = Path(dest_dir) / "source.tar.gz"
    with open(out, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel in files:
                    info = _tarinfo(root, rel)
                    if info.isreg():
                        with open(root / rel, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return PackedSource(path=out, sha256=digest.hexdigest(), size=out.stat().st_size, files=files)
