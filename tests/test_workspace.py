"""Workspace resolution and first-use seeding of the demo world."""

import json
import shutil

import pytest

from tuiapp import paths, workspace
from tuiapp.demo.files import DATASET_FILES, MANIFEST
from tuiapp.engine import data


def test_home_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "env"))
    assert workspace.resolve_home(str(tmp_path / "cli")) == (tmp_path / "cli").resolve()
    assert workspace.resolve_home(None) == (tmp_path / "env").resolve()
    monkeypatch.delenv("TUNELOOP_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert workspace.resolve_home(None) == tmp_path / "xdg" / "tuneloop"


def test_fresh_home_is_seeded_once_with_the_demo_datasets(tmp_path):
    ws = workspace.open_workspace(tmp_path / "home")
    names = {d.name for d in ws.store.list_dataset_versions()}
    assert names == {f"demo/{f.rsplit('.', 1)[0]}" for f in DATASET_FILES}
    assert ws.db_path.exists()
    for sub in ("runs", "datasets", "exports", "models"):
        assert (ws.home / sub).is_dir()
    again = workspace.open_workspace(tmp_path / "home")
    assert len(again.store.list_dataset_versions()) == len(DATASET_FILES)


def test_manifest_says_what_validation_says():
    manifest = json.loads((paths.DEMO_DIR / MANIFEST).read_text())
    for fname in DATASET_FILES:
        report = data.validate(paths.DEMO_DIR / fname)
        assert report.ok, report.errors[:3]
        entry = manifest[fname]
        assert (entry["format"], entry["kind"], entry["rows"]) == (report.format, report.kind, report.rows)
        assert entry["sha256"] == data.content_hash(paths.DEMO_DIR / fname)


def test_a_changed_demo_file_is_validated_instead_of_trusting_the_manifest(tmp_path, monkeypatch):
    demo = tmp_path / "demo"
    shutil.copytree(paths.DEMO_DIR, demo, ignore=shutil.ignore_patterns("base-model"))
    # Half of sft.jsonl: the manifest's row count is now wrong and must not be used.
    lines = (demo / "sft.jsonl").read_text().splitlines(keepends=True)
    (demo / "sft.jsonl").write_text("".join(lines[: len(lines) // 2]))
    monkeypatch.setattr(paths, "DEMO_DIR", demo)
    ws = workspace.open_workspace(tmp_path / "home")
    sft = [d for d in ws.store.list_dataset_versions() if d.name == "demo/sft"][0]
    assert sft.rows == len(lines) // 2
    assert sft.content_hash == data.content_hash(demo / "sft.jsonl")


def test_a_broken_demo_file_is_refused_in_words(tmp_path, monkeypatch):
    demo = tmp_path / "demo"
    shutil.copytree(paths.DEMO_DIR, demo, ignore=shutil.ignore_patterns("base-model"))
    (demo / "kto.jsonl").write_text('{"prompt": "x", "completion": \n')
    monkeypatch.setattr(paths, "DEMO_DIR", demo)
    with pytest.raises(workspace.WorkspaceError, match="kto.jsonl"):
        workspace.open_workspace(tmp_path / "home")


def test_unwritable_home_is_a_workspace_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(workspace.WorkspaceError, match="cannot create the workspace"):
        workspace.open_workspace(blocker / "home")
