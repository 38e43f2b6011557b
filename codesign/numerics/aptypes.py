"""Locate Xilinx's open ``ap_types`` headers and build small C++ programs against them.

The headers ship inside the ``hls4ml`` package; we only look them up (never import
hls4ml) so that importing codesign stays cheap. Compiled programs are cached on disk,
keyed by a hash of everything that affects the binary, because instantiating many
``ap_fixed`` templates takes g++ tens of seconds and tests want the same binary every
run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..util import cache_dir, cached_build

__all__ = [
    "DEFAULT_CXXFLAGS",
    "ApTypesNotFoundError",
    "ap_types_include",
    "cache_dir",
    "compile_cpp",
    "find_gxx",
]

#: Flags under which the open headers compile quietly (see shared/TOOLCHAIN.md).
DEFAULT_CXXFLAGS: tuple[str, ...] = (
    "-std=c++17",
    "-O2",
    "-fwrapv",  # 64-bit accumulators wrap, as the hardware's do (docs/numerics.md)
    "-Wno-unknown-pragmas",
    "-Wno-maybe-uninitialized",
    "-Wno-uninitialized",
    "-Wno-int-in-bool-context",
)


class ApTypesNotFoundError(FileNotFoundError):
    """Raised when hls4ml (and so the ap_types headers) is not installed."""


def ap_types_include() -> Path:
    """Directory holding ``ap_fixed.h``; found via the hls4ml package without importing it."""
    override = os.environ.get("CODESIGN_AP_TYPES")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("hls4ml")
        if spec is None or not spec.submodule_search_locations:
            raise ApTypesNotFoundError("hls4ml is not installed; it ships the ap_types headers")
        pkg = Path(next(iter(spec.submodule_search_locations)))
        path = pkg / "templates" / "vivado" / "ap_types"
    if not (path / "ap_fixed.h").is_file():
        raise ApTypesNotFoundError(f"ap_fixed.h not found in {path}")
    return path


def find_gxx() -> str | None:
    """Path of the C++ compiler ($CXX or g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _compiler_id(gxx: str) -> str:
    out = subprocess.run([gxx, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else gxx


def compile_cpp(
    sources: str | Sequence[str],
    *,
    name: str = "prog",
    extra_flags: Sequence[str] = (),
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    flags: Sequence[str] = DEFAULT_CXXFLAGS,
    jobs: int | None = None,
) -> Path:
    """Compile C++ source text (one or several translation units) into a cached executable.

    Several units are compiled in parallel and then linked, which is how a program with
    hundreds of template instantiations stays affordable. The ap_types directory is
    always on the include path. Returns the path of the binary; a second call with the
    same inputs returns at once.
    """
    units = [sources] if isinstance(sources, str) else list(sources)
    if not units:
        raise ValueError("compile_cpp needs at least one source")
    gxx = find_gxx()
    if gxx is None:
        raise FileNotFoundError("no C++ compiler (g++) on PATH")
    incs = [str(ap_types_include()), *(str(p) for p in include_dirs)]
    all_flags = [*flags, *extra_flags, *(f"-I{d}" for d in incs)]

    h = hashlib.sha256()
    for part in (_compiler_id(gxx), *all_flags, *units):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:20]

    def build(work: Path) -> None:
        srcs = []
        for i, text in enumerate(units):
            src = work / f"u{i}.cpp"
            src.write_text(text)
            srcs.append(src)

        def _cc(src: Path) -> Path:
            obj = src.with_suffix(".o")
            _run([gxx, *all_flags, "-c", str(src), "-o", str(obj)])
            return obj

        n_jobs = jobs or min(len(srcs), os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
            objs = list(pool.map(_cc, srcs))
        _run([gxx, *[str(o) for o in objs], "-o", str(work / name)])
        for obj in objs:
            obj.unlink()

    entry, _ = cached_build("cbin", f"{name}-{key}", build, complete=lambda e: (e / name).is_file())
    return entry / name


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"g++ failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-4000:]}")
