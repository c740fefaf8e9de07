"""What `cloud build` builds: a project directory, or the installed newsclf with the build files its wheel carries."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from newsclf.errors import InputError

BUILD_FILES_DIR = "_build"  # in the installed package: the wheel's copy of what the image build needs
# pyproject.toml's [tool.hatch.build.targets.wheel.force-include] puts these in newsclf/_build/; README.md
# because pyproject.toml names it as the readme, without which `uv sync` in the image cannot build newsclf
BUILD_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md", "docker")
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


@dataclass
class BuildContext:
    """The directory `cloud build` packs, and what the log calls it."""

    root: Path
    label: str


def installed_context(dest: Path, package: Path | None = None) -> BuildContext:
    """The build context of the installed newsclf: the build files its wheel carries (newsclf/_build/)
    staged at `dest`'s root and the package itself as `dest`/newsclf/, so the image is built from the
    very code that runs this. An editable install is its checkout: that directory, as it is."""
    if package is None:
        import newsclf

        package = Path(newsclf.__file__).resolve().parent
    carried = package / BUILD_FILES_DIR
    version = _version_in(package / "__init__.py") or "?"
    if not (carried / "Dockerfile").is_file():
        checkout = package.parent
        if (checkout / "Dockerfile").is_file() and (checkout / "uv.lock").is_file():
            return BuildContext(checkout, f"{checkout} (newsclf {version}, installed from this checkout)")
        raise InputError(
            f"The installed newsclf {version} carries no build files (no {BUILD_FILES_DIR}/Dockerfile in "
            f"{package}): reinstall it from a newsclf checkout (`pipx install --force .`) or its wheel, or "
            "pass --source a newsclf project directory"
        )
    missing = [name for name in BUILD_FILES if not (carried / name).exists()]
    if missing:
        raise InputError(
            f"The installed newsclf {version} lacks {', '.join(missing)} in {carried}: reinstall it from a "
            "newsclf checkout (`pipx install --force .`) or its wheel, or pass --source a newsclf project directory"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in BUILD_FILES:
        src = carried / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True)
        else:
            shutil.copy2(src, dest / name)
    # the package minus its copy of the build files (they are at the root now) and any bytecode
    shutil.copytree(
        package,
        dest / "newsclf",
        symlinks=True,
        ignore=lambda d, names: [
            n for n in names if n == "__pycache__" or (Path(d) == package and n == BUILD_FILES_DIR)
        ],
    )
    return BuildContext(dest, f"the installed newsclf {version} ({package})")


def _version_in(init: Path) -> str | None:
    try:
        m = _VERSION_LINE.search(init.read_text(encoding="utf-8"))
    except OSError:
        return None
    return m.group(1) if m else None


def project_version(root: Path) -> str | None:
    """The newsclf version of the project at `root`: newsclf/__init__.py's __version__ (the line
    hatch reads for the package's version), or None when there is none."""
    return _version_in(Path(root) / "newsclf" / "__init__.py")


def version_tag(version: str) -> str:
    """The image tag for a build of newsclf `version` (a Docker tag: [A-Za-z0-9_.-], at most 128)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", version)[:128]
