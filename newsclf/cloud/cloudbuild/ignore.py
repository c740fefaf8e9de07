"""Which files go into the build context: `.dockerignore` as Docker applies it, `.gcloudignore` as git does.

Docker's rules are Go globs (moby/patternmatcher), which no Python library reproduces: transcribed
here. `.gcloudignore` follows .gitignore, which pathspec implements.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class DockerIgnore:
    """`.dockerignore` rules as Docker applies them (moby/patternmatcher).

    Patterns are Go globs on paths from the context root (`*` stays inside one directory, `**`
    crosses any number); a pattern that matches a parent directory matches everything under it;
    `!` re-includes; the last matching pattern wins.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.rules: list[tuple[bool, str, Callable[[str], bool]]] = []
        for raw in lines:
            line = raw.lstrip("\ufeff")
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            pattern = os.path.normpath(line).replace(os.sep, "/") if line else line
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
            self.rules.append((negate, pattern, self._compile(pattern)))

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        return cls(path.read_text(encoding="utf-8").splitlines() if path.is_file() else [])

    @staticmethod
    def _compile(pattern: str) -> Callable[[str], bool]:
        # A transcription of patternmatcher's Pattern.compile: exact, prefix, suffix or regexp match.
        regex, kind, i, n, in_class = "^", "exact", 0, len(pattern), False
        while i < n:
            ch, start = pattern[i], i
            if ch == "*":
                if i + 1 < n and pattern[i + 1] == "*":
                    i += 1
                    if i + 1 < n and pattern[i + 1] == "/":
                        i += 1
                    if i + 1 >= n:  # trailing `**`: everything below
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            regex += ".*"
                            kind = "regexp"
                    else:
                        regex += "(.*/)?"
                        kind = "regexp"
                    if start == 0:
                        kind = "suffix"
                else:
                    regex += "[^/]*"
                    kind = "regexp"
            elif ch == "?":
                regex += "[^/]"
                kind = "regexp"
            elif ch == "\\":
                if i + 1 < n:
                    i += 1
                    regex += re.escape(pattern[i])
                else:
                    regex += "\\\\"
            elif ch in "[]":
                in_class = ch == "["
                regex += ch
                kind = "regexp"
            else:
                regex += ch if in_class and ch not in "[\\" else re.escape(ch)  # ranges and ^ live in classes
            i += 1
        if kind == "exact":
            return lambda path: path == pattern
        if kind == "prefix":
            prefix = pattern[:-2]
            return lambda path: path.startswith(prefix)
        if kind == "suffix":
            suffix = pattern[2:]
            return lambda path: path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        compiled = re.compile(regex + "$")
        return lambda path: compiled.match(path) is not None

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative, `/`-separated) is left out of the build context."""
        parts = _split(path)
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for negate, _, match in self.rules:
            if negate != matched:  # only a rule that could change the answer is evaluated
                continue
            if match(path) or any(match(p) for p in parents):
                matched = not negate
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether some `!` rule could re-include a path under an excluded `directory`."""
        dparts = _split(directory)
        for negate, pattern, _ in self.rules:
            if not negate:
                continue
            literal = []
            for part in _split(pattern):
                if any(c in part for c in "*?[\\"):
                    return True  # a wildcard: cannot rule it out cheaply
                literal.append(part)
            k = min(len(literal), len(dparts))
            if literal[:k] == dparts[:k] and len(literal) > len(dparts):
                return True
        return False


class GitIgnore:
    """`.gcloudignore` rules, which follow .gitignore (pathspec's GitIgnoreSpec): a name without `/`
    matches at any depth, `dir/` matches directories only, `!` re-includes, and `#!include:FILE`
    (gcloud's own addition) reads another file's rules. The walk prunes ignored directories, so
    nothing under one can be re-included.
    """

    def __init__(self, lines: Iterable[str], root: Path | None = None) -> None:
        import pathspec

        self.lines: list[str] = []
        for raw in lines:
            line = raw.rstrip("\n").lstrip("\ufeff")
            if line.startswith("#!include:"):
                if root is not None:
                    included = root / line[len("#!include:") :].strip()
                    if included.is_file():
                        self.lines.extend(GitIgnore(included.read_text(encoding="utf-8").splitlines()).lines)
                continue
            self.lines.append(line)
        self.spec = pathspec.GitIgnoreSpec.from_lines(self.lines)

    @classmethod
    def read(cls, path: Path) -> GitIgnore:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        return cls(lines, root=path.parent)

    def excluded(self, path: str, is_dir: bool) -> bool:
        """Whether `path` (relative, `/`-separated; a directory when `is_dir`) is ignored."""
        return self.spec.match_file(path + "/" if is_dir else path)
