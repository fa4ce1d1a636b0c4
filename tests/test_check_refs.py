"""`cofi-eventlog check-refs`: a pipeline that still logs to processing_logs is flagged file by file; a clean
one passes."""

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

    def done(self, name, batch_id):
        self.log_processing_success(name, batch_id)
''',
    "cofi-service/src/audit_runner.py": '''
class AuditRunner:
    def __init__(self, repo):
        self.repo = repo

    def fail(self, name, batch_id, error):
        self.log_processing_failure(name, batch_id, error)
        self.repo.log_failure(call_id=name, batch_id=batch_id, stage_name="audit",
                              error_message=str(error))
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
    kinds = {(Path(f["file"]).name, kind) for f in result["findings"] for kind in f["kind"].split(",")}
    assert {("database.py", "definition"), ("database.py", "string"), ("base.py", "import"),
            ("base.py", "attribute"), ("llm1_stage.py", "comment"), ("llm2_stage.py", "attribute"),
            ("audit_pipeline.py", "argument"), ("audit_pipeline.py", "name"), ("metadata_manager.py", "string"),
            ("BATCH_PROCESSING_REVIEW.md", "doc")} <= kinds


def test_legacy_methods_and_repository_calls_are_flagged(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, LEGACY_TREE)
    assert main(["check-refs", str(tmp_path / "cofi-service/src/audit_runner.py"),
                 str(tmp_path / "cofi-service/src/pipeline/llm1_stage.py")]) == 1
    lines = capsys.readouterr().out.splitlines()
    runner, llm1 = tmp_path / "cofi-service/src/audit_runner.py", tmp_path / "cofi-service/src/pipeline/llm1_stage.py"
    assert f"{runner}:7:attribute: self.log_processing_failure(name, batch_id, error)" in lines
    assert f"{runner}:8:call: self.repo.log_failure(call_id=name, batch_id=batch_id, stage_name=\"audit\"," in lines
    assert f"{llm1}:11:attribute: self.log_processing_success(name, batch_id)" in lines
    assert f"{llm1}:8:attribute,call: self.processing_log_repo.log_failure(name, batch_id, \"llm1\", str(error), " \
           "None)" in lines
    build(tmp_path, {"notes.md": "Call `stage.repo.log_success(name)` and log_processing_failure(x).\n"})
    assert main(["check-refs", str(tmp_path / "notes.md"), "--json"]) == 1
    (find,) = json.loads(capsys.readouterr().out)["findings"]
    assert find["words"] == ["log_processing_failure", "log_success"]


def test_lines_are_printed_with_what_they_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, LEGACY_TREE)
    assert main(["check-refs", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    base = tmp_path / "cofi-service/src/pipeline/base.py"
    assert f"{base}:2:import: from database import Database, ProcessingLogRepo" in out.splitlines()
    assert f"{base}:7:attribute,name: self.processing_log_repo = ProcessingLogRepo(db)" in out.splitlines()
    assert f"{tmp_path / 'BATCH_PROCESSING_REVIEW.md'}:4:doc: and processing_logs." in out.splitlines()
    assert f"in 11 of {len(LEGACY_TREE)} files" in err


def test_a_clean_tree_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, CLEAN_TREE)
    assert main(["check-refs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "clean" in err
    assert main(["check-refs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"clean": True, "files_scanned": 4, "missing_paths": [],
                                                   "findings": []}


def test_a_missing_path_is_reported_and_the_rest_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, LEGACY_TREE)
    (tmp_path / "FIXES_APPLIED_SUMMARY.md").unlink()
    monkeypatch.chdir(tmp_path)
    argv = ["check-refs", "cofi-service/", "FINAL_IMPLEMENTATION_SUMMARY.md", "FIXES_APPLIED_SUMMARY.md",
            "AUDIT_REAUDIT_FIXES_APPLIED.md", "BATCH_PROCESSING_REVIEW.md"]  # the command docs/migration.md gives
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "warning: no such file or folder: FIXES_APPLIED_SUMMARY.md; scanning the rest" in err
    assert f"in 10 of {len(LEGACY_TREE) - 1} files; 1 path not found" in err
    assert "BATCH_PROCESSING_REVIEW.md:4:doc" in out and "cofi-service/src/database.py" in out
    assert main(["check-refs", "nope", "neither", "--json"]) == 2
    assert "nothing to scan" in capsys.readouterr().err


@pytest.mark.parametrize("pattern, skipped", [
    ("deploy/*", {"deploy/run.sh", "deploy/k8s/job.yaml"}), ("deploy", {"deploy/run.sh", "deploy/k8s/job.yaml"}),
    ("deploy/", {"deploy/run.sh", "deploy/k8s/job.yaml"}), ("deploy/k8s", {"deploy/k8s/job.yaml"}),
    ("*.yaml", {"deploy/k8s/job.yaml", "ci.yaml"}), ("./ci.yaml", {"ci.yaml"}), ("k8s/*", set()),
    ("src/*.py", {"src/app.py"})])
def test_excludes_work_as_people_expect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], pattern: str, skipped: set[str]) -> None:
    files = {"deploy/run.sh": "mysql -e 'SELECT * FROM processing_logs'\n",
             "deploy/k8s/job.yaml": "table: processing_logs\n", "ci.yaml": "check: processing_logs\n",
             "src/app.py": "import processing_logs\n"}
    build(tmp_path, files)
    for root in (str(tmp_path), "."):
        monkeypatch.chdir(tmp_path)
        assert main(["check-refs", root, "--exclude", pattern, "--json"]) == 1
        flagged = {Path(f["file"]).resolve().relative_to(tmp_path).as_posix()
                   for f in json.loads(capsys.readouterr().out)["findings"]}
        assert flagged == set(files) - skipped, (root, pattern)


def test_only_what_is_asked_is_scanned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, LEGACY_TREE)
    build(tmp_path / ".venv", {"pyvenv.cfg": "", "lib/x.py": "import processing_logs\n"})
    build(tmp_path / "env2", {"pyvenv.cfg": "", "lib/x.py": "import processing_logs\n"})
    build(tmp_path, {"image.png": "processing_logs", "schema/dashboard.sql": "SELECT * FROM processing_logs;\n"})
    assert main(["check-refs", str(tmp_path), "--exclude", "*.md", "--json"]) == 1
    flagged = {Path(f["file"]).name for f in json.loads(capsys.readouterr().out)["findings"]}
    assert "x.py" not in flagged and "image.png" not in flagged and "FIXES_APPLIED_SUMMARY.md" not in flagged
    assert "dashboard.sql" in flagged


def test_python_that_does_not_parse_is_still_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, {"broken.py": "def f(:\n    ProcessingLogRepo()\n"})
    assert main(["check-refs", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "broken.py:2:text: ProcessingLogRepo()" in out and "not parseable" in err


def test_what_counts_as_a_reference() -> None:
    for text in ("processing_logs", "ProcessingLogRepo", "processing_log_repo", "PROCESSING_LOGS", "x.processing_logs",
                 "log_processing_failure", "self.log_processing_success"):
        assert LEGACY.search(text), text
    for text in ("processing_logs_backup", "processing logs", "myprocessing_logs", "log_processing_failures"):
        assert not LEGACY.search(text), text
    finds = scan_python("m.py", b'x = 1\ns = """\nfirst\nprocessing_logs here\n"""\n')
    assert [(f.line, f.kind, f.text) for f in finds] == [(4, "string", "processing_logs here")]
    calls = scan_python("c.py", b"EventLogger.file_error(b, s, f, e)\nlogger.log_failure(x)\n")
    assert [(f.line, f.kind, f.words) for f in calls] == [(2, "call", ("log_failure",))]


def test_the_console_script_runs_it(tmp_path: Path) -> None:
    build(tmp_path, LEGACY_TREE)
    done = subprocess.run([sys.executable, "-m", "cofi_eventlog", "check-refs", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) >= len(LEGACY_TREE)
