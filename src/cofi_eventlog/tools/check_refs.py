"""``cofi-eventlog check-refs PATH...``: the migration plan's "no references to processing_logs or
ProcessingLogRepo remain", as a check that fails a build.

Python is parsed, not grepped, so each find says what it is: an import, a definition, a name, an
attribute such as ``self.processing_log_repo``, an argument, a string holding the table name, or a
comment. Docs (.md, .rst, .txt) and other text files (SQL, YAML, shell, ...) are read line by line.
``processing_logs_backup``, the rollback path, is not a reference.
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

LEGACY = re.compile(r"(?i)(?<![a-z0-9])processing_?logs?(?:_?repo)?(?![a-z0-9]|_backup)")
DOCS = (".md", ".rst", ".txt")
TEXT = (".sql", ".yaml", ".yml", ".json", ".ini", ".cfg", ".toml", ".sh", ".html", ".j2", ".jinja", ".js", ".ts")
SKIP_DIRS = {"__pycache__", "node_modules", "site-packages"}


@dataclass(frozen=True, order=True)
class Find:
    file: str
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.kind}: {self.text}"


def _names(node: ast.AST) -> Iterator[tuple[str, str, int]]:
    """(kind, identifier, line) for every identifier a node introduces or uses."""
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield "import", alias.name + (f" as {alias.asname}" if alias.asname else ""), line
    elif isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            yield "import", f"from {module} import {alias.name}", line
    elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        yield "definition", node.name, line
    elif isinstance(node, ast.Name):
        yield "name", node.id, line
    elif isinstance(node, ast.Attribute):
        yield "attribute", node.attr, getattr(node, "end_lineno", None) or line
    elif isinstance(node, (ast.arg, ast.keyword)) and node.arg is not None:  # None for **kwargs
        yield "argument", node.arg, line


def scan_python(path: str, source: bytes) -> list[Find]:
    tree = ast.parse(source, filename=path)
    found: set[Find] = set()
    for node in ast.walk(tree):
        for kind, identifier, line in _names(node):
            match = LEGACY.search(identifier)
            if match:
                found.add(Find(path, line, kind, identifier if kind == "import" else match.group()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            multiline = (node.end_lineno or node.lineno) > node.lineno
            for match in LEGACY.finditer(node.value):
                line = node.lineno + (node.value[: match.start()].count("\n") if multiline else 0)
                found.add(Find(path, line, "string", match.group()))
    for token in tokenize.tokenize(io.BytesIO(source).readline):
        if token.type == tokenize.COMMENT:
            for match in LEGACY.finditer(token.string):
                found.add(Find(path, token.start[0], "comment", match.group()))
    return sorted(found)


def scan_lines(path: str, text: str, kind: str) -> list[Find]:
    return [Find(path, number, kind, match.group())
            for number, line in enumerate(text.splitlines(), 1) for match in LEGACY.finditer(line)]


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


def files_under(root: str, excludes: list[str]) -> Iterator[str]:
    """Python, docs and text files; hidden folders, virtualenvs and caches are skipped."""
    if os.path.isfile(root):
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg")))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.endswith((".py", *DOCS, *TEXT)) and not any(fnmatch.fnmatch(path, p) for p in excludes):
                yield path


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("check-refs", help="find references to processing_logs / ProcessingLogRepo",
                                   description=(__doc__ or "").split("``: ", 1)[-1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to scan")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="skip files whose path matches (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the finds as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"check-refs: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    scanned = 0
    finds: list[Find] = []
    for root in args.paths:
        for path in files_under(root, args.exclude):
            scanned += 1
            finds.extend(scan_file(path))
    if args.json:
        print(json.dumps({"clean": not finds, "files_scanned": scanned, "findings": [asdict(f) for f in finds]},
                         indent=2))
    else:
        for find in finds:
            print(find)
        files = len({f.file for f in finds})
        summary = (f"{len(finds)} references to processing_logs / ProcessingLogRepo in {files} of {scanned} files"
                   if finds else f"clean: no references to processing_logs / ProcessingLogRepo in {scanned} files")
        print(summary, file=sys.stderr)
    return 1 if finds else 0
