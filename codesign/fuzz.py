"""Fuzzing the Program contract: mutants of a good program.bin and each executor's verdict.

A mutant is a good Program with one thing changed the way a bug or an attacker would:
a header word or a descriptor field set to an edge value, a bit flipped anywhere, the
file cut short or padded with garbage, the CRC left stale, the task argument out of
range. The CRC is recomputed unless the point is the CRC, so mutants reach the deeper
checks. ``compare`` runs the golden executor (the loader, then the kernel check and the
run) and the C-sim kernel (a child process, so a crash is a finding, not the end of the
test) on every mutant and reports every disagreement: a different verdict, a different
refusal code or layer, or different bits in the arena after both ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import ERROR_NAMES, ProgramError
from .executors import CsimArena, initial_arena
from .program import HEADER_BYTES, HEADER_FIELDS, LAYER_WORDS, Program

CRC_AT = (2 + HEADER_FIELDS.index("crc32")) * 4
HEADER_USED_WORDS = 94  # magic .. model name (docs/program-format.md)
KINDS = {  # kind: weight in the mix
    "header-word": 3,
    "descriptor-field": 8,
    "bit-flip": 3,
    "data-word": 1,
    "truncate": 1,
    "append": 1,
    "stale-crc": 1,
    "task": 1,
}


@dataclass(frozen=True)
class Mutant:
    index: int
    kind: str
    blob: bytes
    task: int
    note: str


def recrc(blob: bytes) -> bytes:
    """The blob with its CRC word made right again (the check then looks deeper)."""
    data = bytearray(blob)
    if len(data) < HEADER_BYTES:
        return bytes(data)
    data[CRC_AT : CRC_AT + 4] = b"\0\0\0\0"
    data[CRC_AT : CRC_AT + 4] = zlib.crc32(bytes(data)).to_bytes(4, "little")
    return bytes(data)


def _edge(rng: np.random.Generator, original: int, bus: int) -> int:
    choices = (
        0,
        1,
        2,
        3,
        0xFFFFFFFF,
        0x7FFFFFFF,
        0x80000000,
        original + 1,
        original - 1,
        original + 4,
        original + bus,
        original - bus,
        original * 2,
        original >> 1,
        original ^ (1 << int(rng.integers(32))),
        int(rng.integers(1 << 32)),
        int(rng.integers(0, 300)),
        original + int(rng.integers(1, 1 << 16)),
    )
    return choices[int(rng.integers(len(choices)))] & 0xFFFFFFFF


def _set_word(blob: bytes, at: int, value: int) -> bytes:
    data = bytearray(blob)
    data[at : at + 4] = int(value).to_bytes(4, "little")
    return bytes(data)


def mutants(blob: bytes, count: int, seed: int = 0, tasks: int = 1) -> list[Mutant]:
    """``count`` mutants of ``blob``, reproducible from ``seed``."""
    program = Program.from_bytes(blob)
    bus = program.bus_bits // 8
    rng = np.random.default_rng(seed)
    kinds = list(KINDS)
    weights = np.array([KINDS[k] for k in kinds], float)
    weights /= weights.sum()
    layer_fields = [len(layer.fields) for layer in program.layers]
    out = []
    for index in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        task = int(rng.integers(tasks))
        words = np.frombuffer(blob, "<u4")
        if kind == "header-word":
            word = int(rng.integers(2, HEADER_USED_WORDS))
            if word == CRC_AT // 4:
                word += 1
            value = _edge(rng, int(words[word]), bus)
            mutant, note = recrc(_set_word(blob, 4 * word, value)), f"header word {word}={value:#x}"
        elif kind == "descriptor-field":
            layer = int(rng.integers(len(program.layers)))
            word = int(rng.integers(0, 2 + layer_fields[layer]))  # op, task, fields
            at = HEADER_BYTES + (layer * LAYER_WORDS + word) * 4
            value = _edge(rng, int(words[at // 4]), bus)
            mutant = recrc(_set_word(blob, at, value))
            note = f"layer {layer} word {word}={value:#x}"
        elif kind == "bit-flip":
            end = program.data_offset if rng.random() < 0.8 else len(blob)
            byte = int(rng.integers(0, end))
            if CRC_AT <= byte < CRC_AT + 4:
                byte = CRC_AT + 4
            data = bytearray(blob)
            data[byte] ^= 1 << int(rng.integers(8))
            mutant, note = recrc(bytes(data)), f"bit flip in byte {byte}"
        elif kind == "data-word":
            at = program.data_offset + 4 * int(rng.integers((len(blob) - program.data_offset) // 4))
            value = _edge(rng, int(words[at // 4]), bus)
            mutant, note = recrc(_set_word(blob, at, value)), f"data word at {at}={value:#x}"
        elif kind == "truncate":
            length = int(rng.integers(0, len(blob)))
            mutant, note = recrc(blob[:length]), f"truncated to {length} bytes"
        elif kind == "append":
            extra = rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8).tobytes()
            mutant, note = recrc(blob + extra), f"{len(extra)} garbage bytes appended"
        elif kind == "stale-crc":
            at = int(rng.integers(HEADER_BYTES, len(blob) - 4)) & ~3
            value = _edge(rng, int(words[at // 4]), bus)
            mutant, note = _set_word(blob, at, value), f"word at {at}={value:#x}, CRC stale"
        else:  # the task argument
            task = _edge(rng, task, 1)
            mutant, note = blob, f"task argument {task:#x}"
        out.append(Mutant(index, kind, mutant, task, note))
    return out


# ----------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    """What one executor did with one mutant."""

    loaded: bool = True  # passed the loader / the host driver's checks
    refusal: tuple[int, int | None] | None = None  # the kernel check's (code, layer)
    arena: str | None = None  # digest of the arena after a run
    crash: str | None = None  # anything but the project's errors

    @property
    def label(self) -> str:
        """crash, ERR_* (the kernel check refused), loader (the host's checks refused a
        Program the kernel would take), or ran."""
        if self.crash:
            return "crash"
        if self.refusal:
            return f"ERR_{ERROR_NAMES.get(self.refusal[0], self.refusal[0])}"
        if not self.loaded:
            return "loader"
        return "ran" if self.arena else "accepted"


def arena_digest(arena_words: np.ndarray) -> str:
    return hashlib.blake2b(np.asarray(arena_words, "<i4").tobytes(), digest_size=16).hexdigest()


def host_accepts(blob: bytes, raw: np.ndarray) -> Program | None:
    """The Program when the host's checks pass (the loader: CRC, sizes, the format's
    rules; and the input fits the header's input tensor), else None."""
    try:
        program = Program.from_bytes(blob, "mutant")
    except ProgramError:
        return None
    ref = program.input
    fits = raw.min() >= ref.fmt.raw_min and raw.max() <= ref.fmt.raw_max
    return program if (ref.rows, ref.cols) == raw.shape and fits else None


def golden_verdict(mutant: Mutant, arch, raw: np.ndarray) -> Verdict:
    """The golden side: the kernel check in Python (the op registry's rules, what the
    golden executor runs before a run), the loader (what the host driver runs before the
    first register write), and the run when both accept."""
    from .golden import GoldenExecutor
    from .ops import check_blob, kernel_check_params

    verdict = Verdict()
    try:
        refusal = check_blob(mutant.blob, kernel_check_params(arch), mutant.task)
        verdict.refusal = None if refusal is None else (refusal.code, refusal.layer)
        program = host_accepts(mutant.blob, raw)
        if program is None:
            verdict.loaded = False
            return verdict
        if refusal is None:
            executor = GoldenExecutor(program, arch)
            executor.run(raw, mutant.task)
            verdict.arena = arena_digest(executor.arena)
    except Exception as error:
        verdict.crash = f"{type(error).__name__}: {error}"
    return verdict


# ----------------------------------------------------------------------------- C-sim


class CsimRunner:
    """The C-sim kernel's verdicts on mutants, computed in a child process while the
    caller does other work (the golden side). The child applies the host's checks itself
    (the loader) and runs what they and the kernel accept. A crash or a hang is reported
    on the mutant the child was working on; the rest are retried after it."""

    def __init__(self, arch, items: list[Mutant], raw: np.ndarray, timeout: float = 3600.0):
        from .runtime.csim_device import build_library

        self.arch = arch
        self.library = str(build_library(arch, quiet=True))
        self.items, self.raw, self.timeout = items, np.asarray(raw, np.int64), timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="codesign-fuzz-")
        self.results: dict[int, Verdict] = {}
        self._pending = list(range(len(items)))
        self._proc = self._start()

    def _start(self) -> subprocess.Popen:
        folder = Path(self._tmp.name)
        arrays = {"raw": self.raw}
        for position, index in enumerate(self._pending):
            arrays[f"blob{position}"] = np.frombuffer(self.items[index].blob, np.uint8)
        np.savez(folder / "batch.npz", **arrays)
        tasks = [self.items[i].task for i in self._pending]
        (folder / "meta.json").write_text(json.dumps({"arch": self.arch.to_dict(), "tasks": tasks}))
        command = [sys.executable, "-m", "codesign.fuzz", self.library, str(folder)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self) -> dict[int, Verdict]:
        while self._pending:
            try:
                out, err = self._proc.communicate(timeout=self.timeout)
                failed = self._proc.returncode != 0
                reason = f"exit status {self._proc.returncode}: {err[-300:]}"
            except subprocess.TimeoutExpired:
                self._proc.kill()
                out, _ = self._proc.communicate()
                failed, reason = True, f"hang: no verdict within {self.timeout:.0f} s"
            done = 0
            for line in out.splitlines():
                record = json.loads(line)
                refusal = None if record["code"] == 0 else (record["code"], record["layer"])
                verdict = Verdict(refusal=refusal, arena=record.get("arena"))
                verdict.loaded = record["loaded"]
                self.results[self._pending[record["i"]]] = verdict
                done = record["i"] + 1
            if failed and done < len(self._pending):
                self.results[self._pending[done]] = Verdict(crash=reason)
                done += 1
            self._pending = self._pending[done:]
            if self._pending:
                self._proc = self._start()
        self._tmp.cleanup()
        return self.results


def _worker(library: str, folder: str) -> None:
    """Child process: every mutant of ``folder/batch.npz`` through the C-sim library."""
    from .arch import ArchConfig
    from .contract import ProgramRefused

    batch = np.load(Path(folder) / "batch.npz")
    meta = json.loads((Path(folder) / "meta.json").read_text())
    kernel = CsimArena(ArchConfig.from_dict(meta["arch"]), library=library)
    raw = batch["raw"]
    poison = os.environ.get("CODESIGN_FUZZ_CRASH_ON", "").encode()  # tests: a crashing kernel
    for position, task in enumerate(meta["tasks"]):
        blob = np.ascontiguousarray(batch[f"blob{position}"])
        if poison and blob.tobytes() == poison:
            os.abort()
        code, layer = kernel.check(blob, task)
        program = host_accepts(blob.tobytes(), raw)
        record = {"i": position, "code": code, "layer": layer, "loaded": program is not None}
        if code == 0 and program is not None:
            arena = initial_arena(program, raw)
            try:
                kernel.run(blob, arena, task)
                record["arena"] = arena_digest(arena)
            except ProgramRefused as refused:  # the run's own check disagreed with check()
                record["arena"] = f"status {refused.status:#x}"
        print(json.dumps(record), flush=True)


# ----------------------------------------------------------------------------- compare


@dataclass
class Report:
    """Everything a fuzz run found."""

    tried: int = 0
    kinds: Counter = field(default_factory=Counter)
    golden: Counter = field(default_factory=Counter)
    csim: Counter = field(default_factory=Counter)
    both_ran: int = 0
    crashes: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    bit_differences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "tried": self.tried,
            "kinds": dict(self.kinds),
            "golden": dict(self.golden),
            "csim": dict(self.csim),
            "both_ran": self.both_ran,
            "crashes": self.crashes,
            "disagreements": self.disagreements,
            "bit_differences": self.bit_differences,
        }


def compare(blob: bytes, arch, raw: np.ndarray, count: int, seed: int = 0, tasks: int = 1):
    """Fuzz golden against C-sim on ``count`` mutants of ``blob``; the Report."""
    items = mutants(blob, count, seed, tasks)
    runner = CsimRunner(arch, items, raw)  # the C-sim side runs meanwhile
    golden = [golden_verdict(m, arch, raw) for m in items]
    csim = runner.wait()
    report = Report(tried=len(items))
    for mutant, g in zip(items, golden, strict=True):
        c = csim[mutant.index]
        report.kinds[mutant.kind] += 1
        report.golden[g.label] += 1
        report.csim[c.label] += 1
        what = f"#{mutant.index} {mutant.kind} ({mutant.note}, task {mutant.task})"
        for name, verdict in (("golden", g), ("csim", c)):
            if verdict.crash:
                report.crashes.append(f"{what}: {name} {verdict.crash}")
        if g.crash or c.crash:
            continue
        if g.refusal != c.refusal or g.loaded != c.loaded:
            report.disagreements.append(
                f"{what}: golden {g.refusal} loaded={g.loaded}, C-sim {c.refusal} loaded={c.loaded}"
            )
        elif g.loaded and g.refusal is None:
            report.both_ran += 1
            if g.arena != c.arena:
                report.bit_differences.append(f"{what}: arenas differ")
    return report


if __name__ == "__main__":  # the C-sim worker (see csim_verdicts)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker(sys.argv[1], sys.argv[2])
