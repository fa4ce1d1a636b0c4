"""`cofi-eventlog check-refs`: a tree shaped like the plan's file list is flagged file by file; a clean one passes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cofi_eventlog.cli import main
from cofi_eventlog.tools.check_refs import LEGACY, scan_python

LEGACY_TREE = {
    "cofi-service/src/database.py": '''
import json


class ProcessingLogRepo:
    """Writes processing_logs rows."""

    def __init__(self, db):
        self.db = db

    def log_failure(self, call_id, batch_id, stage_name, error_message, input_payload):
        self.db.execute(
            "INSERT INTO processing_logs (call_id, batch_id, stage_name, status, error_message, input_payload) "
            "VALUES (%s, %s, %s, 'failed', %s, %s)",
            (call_id, batch_id, stage_name, error_message, input_payload))
''',
    "cofi-service/src/pipeline/base.py": '''
from database import Database, ProcessingLogRepo


class BaseStage:
    def __init__(self, db):
        self.processing_log_repo = ProcessingLogRepo(db)

    def log_processing_failure(self, name, batch_id, error):
        self.processing_log_repo.log_failure(call_id=name, batch_id=batch_id, stage_name="lid",
                                             error_message=str(error), input_payload=None)
''',
    "cofi-service/src/pipeline/llm1_stage.py": '''
from pipeline.base import BaseStage


class Llm1Stage(BaseStage):
    def fail(self, name, batch_id, error):
        # also record it in processing_logs
        self.processing_log_repo.log_failure(name, batch_id, "llm1", str(error), None)
''',
    "cofi-service/src/pipeline/llm2_stage.py": '''
import database


def make_repo(db):
    return database.ProcessingLogRepo(db)
''',
    "cofi-service/src/audit_pipeline.py": '''
def audit(db, processing_log_repo, batch_id):
    return processing_log_repo.log_failure(batch_id, "audit")
''',
    "cofi-service/src/metadata_manager.py": '''
TABLE = "processing_logs"


def count_failures(db, batch_id):
    return db.scalar(f"SELECT COUNT(*) FROM {TABLE} WHERE batch_id = %s", (batch_id,))
''',
    "FINAL_IMPLEMENTATION_SUMMARY.md": "# Summary\n\nFailures go to `processing_logs` and batchExecutionLog.\n",
    "FIXES_APPLIED_SUMMARY.md": "# Fixes\n\n- ProcessingLogRepo now retries.\n",
    "AUDIT_REAUDIT_FIXES_APPLIED.md": "# Audit\n\nSee the processing_logs table for failures.\n",
    "BATCH_PROCESSING_REVIEW.md": "# Review\n\nTwo tables: batchExecutionLog\nand processing_logs.\n",
}

CLEAN_TREE = {
    "cofi-service/src/database.py": "class Database:\n    pass\n",
    "cofi-service/src/pipeline/base.py": '''
from cofi_eventlog import EventLogger


class BaseStage:
    def fail(self, name, batch_id, error, gpu_ip):
        EventLogger.file_error(batch_id, "lid", name, error, gpu_ip)
''',
    "cofi-service/src/pipeline/processing.py": "# processing logs are gone; see processing_logs_backup for history\n",
    "FINAL_IMPLEMENTATION_SUMMARY.md": "# Summary\n\nFailures go to batchExecutionLog.\n"
                                       "The old rows are kept in processing_logs_backup.\n",
}


def build(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_every_file_of_the_legacy_tree_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, LEGACY_TREE)
    assert main(["check-refs", str(tmp_path), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["clean"] is False
    assert result["files_scanned"] == len(LEGACY_TREE)
    flagged = {Path(f["file"]).relative_to(tmp_path).as_posix() for f in result["findings"]}
    assert flagged == set(LEGACY_TREE)
    kinds = {(Path(f["file"]).name, f["kind"]) for f in result["findings"]}
    assert {("database.py", "definition"), ("database.py", "string"), ("base.py", "import"),
            ("base.py", "attribute"), ("llm1_stage.py", "comment"), ("llm2_stage.py", "attribute"),
            ("audit_pipeline.py", "argument"), ("audit_pipeline.py", "name"), ("metadata_manager.py", "string"),
            ("BATCH_PROCESSING_REVIEW.md", "doc")} <= kinds


def test_lines_are_printed_as_file_line_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, LEGACY_TREE)
    assert main(["check-refs", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    base = tmp_path / "cofi-service/src/pipeline/base.py"
    assert f"{base}:2:import: from database import ProcessingLogRepo" in out.splitlines()
    assert f"{base}:7:attribute: processing_log_repo" in out.splitlines()
    assert f"{tmp_path / 'BATCH_PROCESSING_REVIEW.md'}:4:doc: processing_logs" in out.splitlines()
    assert "in 10 of 10 files" in err


def test_a_clean_tree_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, CLEAN_TREE)
    assert main(["check-refs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "clean" in err
    assert main(["check-refs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"clean": True, "files_scanned": 4, "findings": []}


def test_only_what_is_asked_is_scanned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, LEGACY_TREE)
    build(tmp_path / ".venv", {"pyvenv.cfg": "", "lib/x.py": "import processing_logs\n"})
    build(tmp_path / "env2", {"pyvenv.cfg": "", "lib/x.py": "import processing_logs\n"})
    build(tmp_path, {"image.png": "processing_logs", "schema/dashboard.sql": "SELECT * FROM processing_logs;\n"})
    assert main(["check-refs", str(tmp_path), "--exclude", "*.md", "--json"]) == 1
    flagged = {Path(f["file"]).name for f in json.loads(capsys.readouterr().out)["findings"]}
    assert "x.py" not in flagged and "image.png" not in flagged and "FIXES_APPLIED_SUMMARY.md" not in flagged
    assert "dashboard.sql" in flagged
    assert main(["check-refs", str(tmp_path / "nope")]) == 2


def test_python_that_does_not_parse_is_still_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, {"broken.py": "def f(:\n    ProcessingLogRepo()\n"})
    assert main(["check-refs", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "broken.py:2:text: ProcessingLogRepo" in out and "not parseable" in err


def test_what_counts_as_a_reference() -> None:
    for text in ("processing_logs", "ProcessingLogRepo", "processing_log_repo", "PROCESSING_LOGS", "x.processing_logs"):
        assert LEGACY.search(text), text
    for text in ("processing_logs_backup", "processing logs", "log_processing_failure", "myprocessing_logs"):
        assert not LEGACY.search(text), text
    finds = scan_python("m.py", b'x = 1\ns = """\nfirst\nprocessing_logs here\n"""\n')
    assert [(f.line, f.kind) for f in finds] == [(4, "string")]


def test_the_console_script_runs_it(tmp_path: Path) -> None:
    build(tmp_path, LEGACY_TREE)
    done = subprocess.run([sys.executable, "-m", "cofi_eventlog", "check-refs", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) >= len(LEGACY_TREE)
