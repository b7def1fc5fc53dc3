"""What to scan: files under the given paths, every blob in a git history, or the git
index (what the next commit will contain).

Git is driven through its plumbing (``rev-list``, ``diff-tree --stdin``, ``cat-file
--batch``, ``ls-files --stage``) in a handful of subprocesses, whatever the size of the
history; no git library is needed. Lock files, vendored directories, binaries and very
large files are skipped the same way in all three.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from keysafe.errors import InvalidValue

__all__ = ["Blob", "SkipRules", "git_history", "git_root", "git_staged", "walk_files"]

#: Directories never descended into: version control, dependencies, caches.
SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", "node_modules", "bower_components", "vendor", "_vendor",
    ".venv", "venv", "site-packages", "__pycache__", ".tox", ".nox", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", ".eggs", ".terraform",
})
#: Lock files: thousands of integrity hashes, never a credential.
LOCK_FILES = frozenset({
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock",
    "pipfile.lock", "cargo.lock", "composer.lock", "gemfile.lock", "go.sum", "uv.lock",
    "pdm.lock", "flake.lock", "mix.lock", "packages.lock.json", "conda-lock.yml",
    "bun.lockb", "pubspec.lock", "podfile.lock",
})
#: Suffixes of files that are binary or generated (checked before reading a byte).
BINARY_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".psd",
    ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".whl",
    ".egg", ".jar", ".war", ".class", ".so", ".dylib", ".dll", ".exe", ".o", ".a", ".pyc",
    ".pyo", ".pyd", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mo", ".mp3", ".mp4",
    ".wav", ".ogg", ".mov", ".avi", ".webm", ".db", ".sqlite", ".sqlite3", ".parquet",
    ".npy", ".npz", ".pkl", ".pickle", ".h5", ".onnx", ".pt", ".bin", ".dat", ".map",
    ".lock",
})
MAX_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SkipRules:
    """Which paths are skipped: the built-in lists plus ``--exclude`` globs."""

    exclude: tuple[str, ...] = ()
    max_bytes: int = MAX_BYTES

    def skip_path(self, rel: str) -> bool:
        """Whether a relative path (``/``-separated) is skipped by name alone."""
        parts = rel.split("/")
        if any(p in SKIP_DIRS for p in parts[:-1]):
            return True
        name = parts[-1].lower()
        if name in LOCK_FILES or name.endswith((".min.js", ".min.css")):
            return True
        dot = name.rfind(".")
        if dot > 0 and name[dot:] in BINARY_SUFFIXES:
            return True
        return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(parts[-1], g)
                   for g in self.exclude)


@dataclass(frozen=True, slots=True)
class Blob:
    """Text to scan and where it came from."""

    path: str
    text: str
    commit: str | None = None
    disk_path: Path | None = None


def decode(data: bytes, rules: SkipRules) -> str | None:
    """The text of a file, or None for a binary or oversized one. Invalid UTF-8 bytes
    survive as surrogates so offsets stay exact."""
    if len(data) > rules.max_bytes or b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", "surrogateescape")


def display_path(path: Path, cwd: Path) -> str:
    """A path relative to the working directory when inside it, with ``/`` separators."""
    try:
        return path.relative_to(cwd).as_posix()
    except ValueError:
        return path.as_posix()


def walk_files(paths: Sequence[Path], rules: SkipRules,
               on_skip: Callable[[str], None] | None = None) -> Iterator[Blob]:
    """Every scannable file under ``paths`` (files given by name are scanned even when a
    rule would skip them by name, as long as they are text), sorted for stable output."""
    cwd = Path.cwd()
    for root in paths:
        if not root.exists():
            raise InvalidValue(f"{root}: no such file or directory")
        if root.is_file():
            yield from _read_one(root.absolute(), display_path(root.absolute(), cwd), rules,
                                 on_skip)
            continue
        base = root.absolute()
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(base).as_posix()
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS
                                 and not rules.skip_path(_join(rel_dir, d) + "/x"))
            for name in sorted(filenames):
                rel = _join(rel_dir, name)
                full = Path(dirpath) / name
                if rules.skip_path(rel) or full.is_symlink() or not full.is_file():
                    if on_skip is not None:
                        on_skip(rel)
                    continue
                yield from _read_one(full, display_path(full, cwd), rules, on_skip)


def _join(a: str, b: str) -> str:
    return b if a in ("", ".") else f"{a}/{b}"


def _read_one(full: Path, shown: str, rules: SkipRules,
              on_skip: Callable[[str], None] | None) -> Iterator[Blob]:
    try:
        if full.stat().st_size > rules.max_bytes:
            if on_skip is not None:
                on_skip(shown)
            return
        data = full.read_bytes()
    except OSError:
        if on_skip is not None:
            on_skip(shown)
        return
    text = decode(data, rules)
    if text is None:
        if on_skip is not None:
            on_skip(shown)
        return
    yield Blob(shown, text, disk_path=full)


# -- git ------------------------------------------------------------------------------
def _git(root: Path, *args: str, input: bytes | None = None) -> bytes:
    try:
        p = subprocess.run(["git", "-C", str(root), *args], input=input,
                           capture_output=True, timeout=600, check=False)
    except FileNotFoundError:
        raise InvalidValue("git is not installed (needed for --git-history and --staged)") \
            from None
    if p.returncode != 0:
        detail = p.stderr.decode(errors="replace").strip().splitlines()
        raise InvalidValue(f"git {args[0]} failed in {root}: "
                           f"{detail[-1] if detail else 'exit ' + str(p.returncode)}")
    return p.stdout


def git_root(path: Path) -> Path:
    """The top of the work tree containing ``path``; InvalidValue when there is none."""
    where = path if path.is_dir() else path.parent
    try:
        out = _git(where, "rev-parse", "--show-toplevel")
    except InvalidValue:
        raise InvalidValue(f"{path} is not inside a git repository") from None
    return Path(out.decode().strip())


def git_exposure(path: Path) -> str | None:
    """How git sees a file of secrets: "tracked" (committed, or added), "not ignored"
    (in a work tree, and no .gitignore rule covers it), or None (ignored, or not in a
    git work tree, or no git here)."""
    try:
        root = git_root(path)
    except InvalidValue:
        return None
    rel = os.path.relpath(path.resolve(), root.resolve())

    def ok(*args: str) -> bool:
        try:
            return subprocess.run(["git", "-C", str(root), *args, "--", rel],
                                  capture_output=True, timeout=60,
                                  check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    if ok("ls-files", "--error-unmatch"):
        return "tracked"
    return None if ok("check-ignore", "-q") else "not ignored"


def _cat_blobs(root: Path, shas: Sequence[str], rules: SkipRules) -> Iterator[
        tuple[str, str | None]]:
    """(sha, text or None) for each blob, through one ``git cat-file --batch``."""
    if not shas:
        return
    proc = subprocess.Popen(["git", "-C", str(root), "cat-file", "--batch"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    assert proc.stdout is not None
    stdin: IO[bytes] = proc.stdin

    def feed() -> None:
        # A separate thread: writing every request before reading would deadlock once
        # both pipes fill.
        try:
            for sha in shas:
                stdin.write(sha.encode() + b"\n")
            stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = proc.stdout
    try:
        for sha in shas:
            header = out.readline().split()
            if len(header) < 3 or header[1] != b"blob":
                continue  # "missing" (a promisor remote's absent blob) or not a blob
            size = int(header[2])
            data = out.read(size + 1)[:size]
            yield sha, decode(data, rules)
    finally:
        out.close()
        writer.join(timeout=10)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _changed_blobs(root: Path) -> Iterator[tuple[str, str, str]]:
    """(commit, path, blob) for every file version any commit (on any ref) introduced,
    oldest commits first; merges are compared with each parent."""
    commits = _git(root, "rev-list", "--all", "--reverse")
    if not commits.strip():
        return
    raw = _git(root, "diff-tree", "--stdin", "-r", "--root", "--no-renames", "-m", "-z",
               input=commits)
    tokens = raw.split(b"\0")
    commit = ""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith(b":"):
            meta = tok[1:].split()
            path = tokens[i + 1].decode("utf-8", "surrogateescape") if i + 1 < len(tokens) \
                else ""
            i += 2
            if len(meta) < 5 or meta[4].startswith(b"D"):
                continue
            mode, sha = meta[1], meta[3].decode()
            if mode in (b"160000", b"120000") or set(sha) == {"0"}:
                continue  # submodule, symlink, deletion
            yield commit, path, sha
            continue
        tok = tok.strip()
        if tok:
            commit = tok.decode()
        i += 1


def git_history(root: Path, rules: SkipRules,
                on_total: Callable[[int], None] | None = None) -> Iterator[Blob]:
    """Each distinct blob in the history once, with the first commit and path that
    introduced it (a secret added and later removed is still found)."""
    first: dict[str, tuple[str, str]] = {}
    for commit, path, sha in _changed_blobs(root):
        if sha not in first and not rules.skip_path(path):
            first[sha] = (commit, path)
    if on_total is not None:
        on_total(len(first))
    for sha, text in _cat_blobs(root, list(first), rules):
        if text is not None:
            commit, path = first[sha]
            yield Blob(path, text, commit=commit)


def git_staged(root: Path, rules: SkipRules,
               only: Iterable[str] = ()) -> Iterator[Blob]:
    """The staged version of every file added, copied, modified or renamed in the index
    (what ``git commit`` would record), optionally limited to ``only`` paths."""
    names = _git(root, "diff", "--cached", "--name-only", "--no-renames", "-z",
                 "--diff-filter=ACMR").split(b"\0")
    wanted = {n.decode("utf-8", "surrogateescape") for n in names if n}
    only_set = set(only)
    if only_set:
        wanted &= only_set
    entries: dict[str, list[str]] = {}
    for rec in _git(root, "ls-files", "--stage", "-z").split(b"\0"):
        if not rec:
            continue
        meta, _, path_b = rec.partition(b"\t")
        path = path_b.decode("utf-8", "surrogateescape")
        mode, sha, _stage = meta.decode().split()
        if path in wanted and mode not in ("160000", "120000") and not rules.skip_path(path):
            entries.setdefault(sha, []).append(path)
    for sha, text in _cat_blobs(root, list(entries), rules):
        if text is not None:
            for path in entries[sha]:
                yield Blob(path, text)
