"""Small helpers shared by the writers."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OUTPUT_MARKER = ".codesign-output"  # written into every folder atomic_output_dir makes
_LEGACY_MARKERS = ("report.json", "manifest.json")  # outputs written before the marker


def check_output_dir(out: Path) -> Path:
    """Refuse an ``out`` that is not ours to replace, before any work is done: a file, or a
    folder holding files that no codesign build or deploy wrote."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise ValueError(f"output {out} exists and is not a folder; choose another path")
        entries = list(out.iterdir())
        ours = any((out / name).exists() for name in (OUTPUT_MARKER, *_LEGACY_MARKERS))
        if entries and not ours:
            raise ValueError(
                f"output folder {out} holds files codesign did not write; "
                "choose another path or empty it"
            )
    return out


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    return result == 0


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back Ctrl-C/SIGTERM while two renames must both happen."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM}
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError):  # not the main thread / no POSIX signals
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextmanager
def atomic_output_dir(out: Path) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on any error it is
    removed and `out` stays as it was, so no half-written folder poses as complete.

    The old folder is swapped out in one atomic step where the OS allows, and never left
    missing by an interrupt; a file or a foreign folder at `out` is refused, not replaced.
    """
    out = check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are meant to be shared and copied
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text("written by codesign; replaced by the next run\n")
        check_output_dir(out)  # it may have changed while we worked
        if out.exists():
            if _exchange(tmp, out):  # tmp now holds the old output
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            with _signals_held():
                out.rename(old)
                tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed): one compile or build per
    cache entry across processes (parallel tests, notebooks, the CLI)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- compiled artefacts


def cache_dir() -> Path:
    """Per-user cache of compiled artefacts: ``$CODESIGN_CACHE``, else
    ``$XDG_CACHE_HOME/codesign``, else ``~/.cache/codesign``."""
    root = os.environ.get("CODESIGN_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "codesign"


def cache_key(*parts) -> str:
    """A short digest of everything a build depends on (sources, flags, tool versions)."""
    import hashlib
    import json

    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


SOURCE_SUFFIXES = (".py", ".j2", ".json", ".h", ".tcl")


def tree_digest(*folders: Path) -> str:
    """A digest of the source files under ``folders`` (names and contents)."""
    import hashlib

    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in SOURCE_SUFFIXES:
                digest.update(str(path.relative_to(folder)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """A digest of codesign's own sources (the package and the templates), for caches
    whose results depend on them: a result from an edited tree is never reused, though
    the package version has not moved."""
    root = Path(__file__).resolve().parent
    return tree_digest(root, root.parent / "hls_templates")


def cached_build(
    kind: str,
    key: str,
    build,
    *,
    complete=None,
    force: bool = False,
    on_failure=None,
) -> tuple[Path, bool]:
    """The cache entry ``cache_dir()/kind/key`` for one compiled artefact, built now by
    ``build(work_dir)`` when it is missing: (entry, built now).

    One builder per entry across processes (a file lock); the build happens in a temp
    folder beside the entry, renamed into place only when complete, so an interrupted or
    failed build never leaves an entry that looks finished. ``complete(entry)`` says
    whether an entry is usable (default: it exists); ``on_failure(work_dir)`` may save a
    log before the temp folder goes.
    """
    complete = complete or Path.is_dir
    base = cache_dir() / kind
    entry = base / key
    if not force and complete(entry):
        return entry, False
    with file_lock(base / "locks" / f"{key}.lock"):
        if not force and complete(entry):  # another process built it while we waited
            return entry, False
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base))
        try:
            build(work)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.exists():  # an older cache layout kept a file here
                entry.unlink()
            work.rename(entry)
        except BaseException:
            if on_failure is not None:
                on_failure(work)
            shutil.rmtree(work, ignore_errors=True)
            raise
    return entry, True


def generated_doc_main(path: Path, text: str, argv: list[str], command: str) -> int:
    """``main`` of a doc generator: rewrite ``path`` with ``text``, or with ``--check``
    exit 1 when the file differs (a test and CI keep generated docs current)."""
    if "--check" in argv:
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is stale: run {command}")
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


def replace_marked(path: Path, name: str, text: str) -> None:
    """Put `text` between ``<!-- name -->`` and ``<!-- /name -->`` in the file at `path`
    (a benchmark's table in the docs); the markers must be there."""
    import re

    doc = path.read_text()
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(doc):
        raise ValueError(f"{path}: no {begin} ... {end} markers")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", doc))
