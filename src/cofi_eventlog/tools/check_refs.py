"""``cofi-eventlog check-refs PATH...``: find the code and docs that still refer to processing_logs or
ProcessingLogRepo, as a check that can fail a build.

Python is parsed, not grepped, so each find says what it is: an import, a definition, a name, an
attribute such as ``self.processing_log_repo``, an argument, a string holding the table name, a comment,
or a call of the repository's methods (``self.repo.log_failure(...)``); the helpers
``log_processing_failure`` / ``log_processing_success`` count as names. Docs (.md, .rst, .txt) and other
text files (SQL, YAML, shell, ...) are read line by line. Each find prints its line.
``processing_logs_backup``, the rollback path, is not a reference. A path that does not exist is
reported and the others are scanned.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import io
import json
import os
import re
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .command import add_command

LEGACY = re.compile(r"(?i)(?<![a-z0-9])processing_?logs?(?:_?repo)?(?![a-z0-9]|_backup)"
                    r"|(?<![a-z0-9])log_processing_(?:failure|success)(?![a-z0-9])")
# ProcessingLogRepo's own methods, called on whatever holds the repository (self.repo.log_failure(...))
REPO_METHODS = ("log_failure", "log_success")
REPO_CALL = re.compile(r"\.(?:" + "|".join(REPO_METHODS) + r")\s*\(")
DOCS = (".md", ".rst", ".txt")
TEXT = (".sql", ".yaml", ".yml", ".json", ".ini", ".cfg", ".toml", ".sh", ".html", ".j2", ".jinja", ".js", ".ts")
SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}
SHOWN = 160  # characters of a line printed with its find


@dataclass(frozen=True, order=True)
class Find:
    """One line holding references: what they are (``kind``, comma-separated), the words, and the line."""

    file: str
    line: int
    kind: str
    text: str
    words: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.kind}: {self.text}"


def _names(node: ast.AST) -> Iterator[tuple[str, str, int]]:
    """(kind, identifier, line) for every identifier a node introduces or uses."""
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield "import", alias.name, line
            if alias.asname:
                yield "import", alias.asname, line
    elif isinstance(node, ast.ImportFrom):
        for alias in node.names:
            yield "import", alias.name, line
            if alias.asname:
                yield "import", alias.asname, line
        yield "import", node.module or "", line
    elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        yield "definition", node.name, line
    elif isinstance(node, ast.Name):
        yield "name", node.id, line
    elif isinstance(node, ast.Attribute):
        yield "attribute", node.attr, getattr(node, "end_lineno", None) or line
    elif isinstance(node, (ast.arg, ast.keyword)) and node.arg is not None:  # None for **kwargs
        yield "argument", node.arg, line


def _repository_call(node: ast.AST) -> tuple[str, int] | None:
    """(method, line) when the node calls one of the repository's methods on some object."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in REPO_METHODS:
        return node.func.attr, getattr(node.func, "end_lineno", None) or node.lineno
    return None


def _merged(path: str, lines: list[str], hits: list[tuple[int, str, str]]) -> list[Find]:
    """One find per line: its kinds and words in first-seen order, and the line itself."""
    by_line: dict[int, tuple[list[str], list[str]]] = {}
    for number, kind, word in sorted(hits):
        kinds, words = by_line.setdefault(number, ([], []))
        if kind not in kinds:
            kinds.append(kind)
        if word not in words:
            words.append(word)
    finds = []
    for number, (kinds, words) in sorted(by_line.items()):
        text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        text = text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"
        finds.append(Find(path, number, ",".join(sorted(kinds)), text, tuple(words)))
    return finds


def scan_python(path: str, source: bytes) -> list[Find]:
    tree = ast.parse(source, filename=path)
    hits: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        for kind, identifier, line in _names(node):
            hits += [(line, kind, m.group()) for m in LEGACY.finditer(identifier)]
        call = _repository_call(node)
        if call:
            hits.append((call[1], "call", call[0]))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            multiline = (node.end_lineno or node.lineno) > node.lineno
            for match in LEGACY.finditer(node.value):
                line = node.lineno + (node.value[: match.start()].count("\n") if multiline else 0)
                hits.append((line, "string", match.group()))
    for token in tokenize.tokenize(io.BytesIO(source).readline):
        if token.type == tokenize.COMMENT:
            hits += [(token.start[0], "comment", m.group()) for m in LEGACY.finditer(token.string)]
    return _merged(path, source.decode("utf-8", "replace").splitlines(), hits)


def scan_lines(path: str, text: str, kind: str) -> list[Find]:
    lines = text.splitlines()
    hits = [(number, kind, match.group()) for number, line in enumerate(lines, 1)
            for pattern in (LEGACY, REPO_CALL) for match in pattern.finditer(line)]
    return _merged(path, lines, [(n, k, w.lstrip(".").split("(")[0].strip()) for n, k, w in hits])


def scan_file(path: str) -> list[Find]:
    with open(path, "rb") as handle:
        data = handle.read()
    if path.endswith(".py"):
        try:
            return scan_python(path, data)
        except (SyntaxError, ValueError, tokenize.TokenError) as exc:
            print(f"{path}: not parseable as Python ({exc}); read as text", file=sys.stderr)
    kind = "doc" if path.endswith(DOCS) else "text"
    return scan_lines(path, data.decode("utf-8", "replace"), kind)


class Excludes:
    """--exclude patterns, matched as people expect from .gitignore: a pattern without a slash matches a
    file or folder name anywhere (``*.md``, ``deploy``); one with a slash matches a path from the folder
    being scanned, or as printed (``deploy/*``, ``src/legacy/``), and a folder it matches is skipped whole."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [p.strip().removeprefix("./").rstrip("/") for p in patterns if p.strip()]

    def __call__(self, relative: str) -> bool:
        relative = relative.replace(os.sep, "/").removeprefix("./")
        parts = relative.split("/")
        for pattern in self.patterns:
            if "/" not in pattern:
                if any(fnmatch.fnmatchcase(part, pattern) for part in parts):
                    return True
            elif any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
                return True
        return False


def files_under(root: str, excluded: Excludes) -> Iterator[str]:
    """Python, docs and text files; hidden folders, virtualenvs, caches and excluded paths are skipped."""
    if os.path.isfile(root):
        if not excluded(os.path.basename(root)) and not excluded(root):
            yield root
        return
    for folder, dirs, files in os.walk(root):
        here = os.path.relpath(folder, root)
        inside = "" if here == "." else here + "/"
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
                         and not excluded(inside + d) and not excluded(os.path.join(folder, d)))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.endswith((".py", *DOCS, *TEXT)) and not excluded(inside + name) and not excluded(path):
                yield path


def register(subparsers: Any) -> None:
    parser = add_command(subparsers, "check-refs", "find references to processing_logs / ProcessingLogRepo", __doc__)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to scan")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="skip files and folders: a name anywhere (*.md, deploy) or a path from the scanned "
                             "folder (deploy/*, src/legacy/); repeatable")
    parser.add_argument("--json", action="store_true", help="print the finds as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not os.path.exists(p)]
    for path in missing:
        print(f"check-refs: warning: no such file or folder: {path}; scanning the rest", file=sys.stderr)
    if len(missing) == len(args.paths):
        print("check-refs: nothing to scan", file=sys.stderr)
        return 2
    excluded = Excludes(args.exclude)
    scanned = 0
    finds: list[Find] = []
    for root in args.paths:
        if root in missing:
            continue
        for path in files_under(root, excluded):
            scanned += 1
            finds.extend(scan_file(path))
    if args.json:
        print(json.dumps({"clean": not finds, "files_scanned": scanned, "missing_paths": missing,
                          "findings": [asdict(f) for f in finds]}, indent=2))
    else:
        for find in finds:
            print(find)
        files = len({f.file for f in finds})
        summary = (f"{len(finds)} lines referring to processing_logs / ProcessingLogRepo in {files} of {scanned} "
                   "files" if finds else f"clean: no references to processing_logs / ProcessingLogRepo in "
                   f"{scanned} files")
        print(summary + (f"; {len(missing)} path{'s' if len(missing) > 1 else ''} not found" if missing else ""),
              file=sys.stderr)
    return 1 if finds else 0
