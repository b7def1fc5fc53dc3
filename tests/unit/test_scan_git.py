"""Scanning git: every blob in the history (a secret added and later removed is found, with
the commit that added it), and the index (--staged, the pre-commit hook). Real git
repositories in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keysafe.errors import InvalidValue
from keysafe.scanning import scan

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

KEY = "ghp_" + "Zk3qR8vT2mW9xY4pL7nB5cD1fG6hJ0sA1eU2"
AWS = "AKIAZ7Q3R2TUVW4XY5AB"


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@localhost",
               GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    p = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True,
                       check=True, timeout=60)
    return p.stdout.decode().strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "README.md").write_text("# app\n")
    git(r, "add", "README.md")
    git(r, "commit", "-q", "-m", "start")
    return r


def test_history_finds_a_secret_added_then_removed(repo: Path) -> None:
    (repo / "config").mkdir()
    (repo / "config" / "prod.env").write_text(f"DEBUG=0\nGITHUB_TOKEN={KEY}\n")
    git(repo, "add", "config/prod.env")
    git(repo, "commit", "-q", "-m", "add config")
    added = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-q", "config/prod.env")
    git(repo, "commit", "-q", "-m", "remove config")
    assert not (repo / "config" / "prod.env").exists()

    assert scan([repo]).findings == []  # the working tree is clean
    report = scan([repo], mode="history")
    assert [(f.path, f.line, f.rule, f.commit, f.source) for f in report.findings] == [
        ("config/prod.env", 2, "github-token", added, "history")]


def test_history_covers_other_branches_and_reports_each_blob_once(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{AWS}"\n')
    git(repo, "add", "settings.py")
    git(repo, "commit", "-q", "-m", "feature")
    (repo / "other.txt").write_text("unrelated\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "more")  # the same settings.py blob lives on
    git(repo, "checkout", "-q", "main")
    report = scan([repo], mode="history")
    assert [(f.path, f.rule) for f in report.findings] == [("settings.py", "aws-access-key-id")]


def test_history_skips_lock_files_and_binaries(repo: Path) -> None:
    (repo / "poetry.lock").write_text(f'token = "{KEY}"\n')
    (repo / "img.png").write_bytes(b"\x89PNG\0\0" + KEY.encode())
    git(repo, "add", "poetry.lock", "img.png")
    git(repo, "commit", "-q", "-m", "deps")
    assert scan([repo], mode="history").findings == []


def test_staged_scans_the_index_not_the_working_tree(repo: Path) -> None:
    f = repo / "app.py"
    f.write_text(f'TOKEN = "{KEY}"\n')
    git(repo, "add", "app.py")
    f.write_text("TOKEN = os.environ['TOKEN']\n")  # fixed in the tree, but not staged
    (repo / "untracked.env").write_text(f"GITHUB_TOKEN={KEY}\n")
    report = scan([repo], mode="staged")
    assert [(x.path, x.line, x.source) for x in report.findings] == [("app.py", 1, "staged")]
    git(repo, "add", "app.py")
    assert scan([repo], mode="staged").findings == []


def test_staged_limited_to_named_files(repo: Path) -> None:
    (repo / "a.py").write_text(f'TOKEN = "{KEY}"\n')
    (repo / "b.py").write_text(f'AWS_KEY = "{AWS}"\n')
    git(repo, "add", "a.py", "b.py")
    report = scan([repo / "b.py"], mode="staged")
    assert [x.path for x in report.findings] == ["b.py"]


def test_git_modes_outside_a_repository_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match="not inside a git repository"):
        scan([tmp_path], mode="history")
