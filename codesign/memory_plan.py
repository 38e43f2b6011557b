"""The activation arena's memory plan: where each buffer lives, and for how long.

Every executor runs a Program's layers one after another and a layer's reads and writes
finish before the next layer starts, so two buffers whose lifetimes (the first and last
layer that touch them) do not overlap may share arena bytes. The compiler hands this
module every buffer with its lifetime and gets an offset for each; the plan it returns is
what ``program.meta["memory"]`` records and the build report shows. Without reuse (a user
who wants every layer's output left in the arena after a run) each buffer gets bytes of
its own, in order of first use.

The input is what the host writes before a run, the outputs what it reads after it: the
input's lifetime runs from before the first layer, an output's to after the last (and the
input's too: the kernel leaves the input rows as it found them, so a host can run every
task on one upload).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .program import padded


@dataclass(frozen=True)
class Buffer:
    """A block of arena bytes that one tensor (or one op's scratch) needs from the node
    ``first`` to the node ``last`` (node indices; -1 is "before the run", the node count
    "after it")."""

    name: str
    nbytes: int
    first: int
    last: int
    host: bool = False  # the host writes or reads it (input, outputs): never on chip

    def live_with(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class Placement:
    buffer: Buffer
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.buffer.nbytes


@dataclass
class MemoryPlan:
    """Offsets for every buffer; ``arena_bytes`` is the arena the Program asks for, of
    which the first ``window_bytes`` are the kernel's on-chip window."""

    placements: dict[str, Placement]
    arena_bytes: int
    reuse: bool
    align: int
    window_bytes: int = 0

    def offset(self, name: str) -> int:
        return self.placements[name].offset

    def _size(self, buffer: Buffer) -> int:
        return padded(buffer.nbytes, self.align)

    @property
    def unshared_bytes(self) -> int:
        """The arena without reuse: every buffer's aligned bytes added up."""
        return sum(self._size(buffer) for buffer in self.buffers)

    @property
    def peak_live_bytes(self) -> int:
        """The most aligned bytes live at once: no plan can use less arena than this."""
        buffers = self.buffers
        points = {b.first for b in buffers} | {b.last for b in buffers}
        return max(
            (sum(self._size(b) for b in buffers if b.first <= at <= b.last) for at in points),
            default=0,
        )

    @property
    def buffers(self) -> list[Buffer]:
        return [place.buffer for place in self.placements.values()]

    def to_dict(self) -> dict:
        spilled = [
            p.buffer.name
            for p in self.placements.values()
            if self.window_bytes and p.offset >= self.window_bytes and not p.buffer.host
        ]
        return {
            "reuse": self.reuse,
            "arena_bytes": self.arena_bytes,
            "window_bytes": self.window_bytes,
            "ddr_bytes": self.arena_bytes - self.window_bytes,
            "spilled": spilled,
            "unshared_bytes": self.unshared_bytes,
            "peak_live_bytes": self.peak_live_bytes,
            "buffers": [
                {**asdict(place.buffer), "offset": place.offset,
                 "on_chip": place.offset < self.window_bytes}
                for place in sorted(self.placements.values(), key=lambda p: (p.offset, p.end))
            ],
        }  # fmt: skip


def _place(buffers: list[Buffer], placed: dict[str, Placement], base: int, align: int,
           limit: int | None, reuse: bool) -> None:  # fmt: skip
    """Place each of ``buffers`` at the lowest ``align``-byte offset >= ``base`` that
    overlaps no buffer of ``placed`` at or past ``base`` (with reuse: only those live at
    the same time) and ends by ``limit`` (None: no limit; a buffer that would not is
    left out)."""
    for buffer in buffers:
        busy = sorted(
            (p.offset, padded(p.end, align))
            for p in placed.values()
            if p.offset >= base and (not reuse or p.buffer.live_with(buffer))
        )
        offset = base
        for start, end in busy:
            if offset + buffer.nbytes <= start:
                break
            offset = max(offset, end)
        if limit is None or offset + buffer.nbytes <= limit:
            placed[buffer.name] = Placement(buffer, offset)


def plan(buffers: list[Buffer], align: int, reuse: bool = True, window: int = 0) -> MemoryPlan:
    """Place ``buffers`` at ``align``-byte offsets.

    With reuse: largest buffer first (ties: earliest first use, then name, so the plan is
    deterministic), each at the lowest offset that overlaps no placed buffer live at the
    same time: the greedy-by-size rule that comes close to the peak live bytes on a
    network's chain of activations. Without reuse: one after another in order of first
    use.

    ``window``: bytes of on-chip arena. The buffers only the kernel touches go there first,
    as many as fit; the host's (``Buffer.host``: the input and outputs) and the spills
    follow in DDR, from the end of the window's last buffer (the plan's ``window_bytes``)."""
    names = [buffer.name for buffer in buffers]
    if len(set(names)) != len(names):
        raise ValueError("memory plan: two buffers share a name")
    if reuse:
        order = sorted(buffers, key=lambda b: (-b.nbytes, b.first, b.name))
    else:
        order = sorted(buffers, key=lambda b: b.first)  # stable: given order on ties
    placed: dict[str, Placement] = {}
    if window:
        _place([b for b in order if not b.host], placed, 0, align, window, reuse)
    boundary = max((padded(p.end, align) for p in placed.values()), default=0)
    _place([b for b in order if b.name not in placed], placed, boundary, align, None, reuse)
    size = max((padded(p.end, align) for p in placed.values()), default=0)
    return MemoryPlan(placements=placed, arena_bytes=size, reuse=reuse, align=align,
                      window_bytes=boundary)  # fmt: skip


def check(memory: MemoryPlan) -> None:
    """Raise when two buffers live at the same time share a byte (the plan's invariant)."""
    places = sorted(memory.placements.values(), key=lambda p: p.offset)
    for i, one in enumerate(places):
        if one.end > memory.arena_bytes:
            raise AssertionError(f"{one.buffer.name} ends past the arena")
        for other in places[i + 1 :]:
            if other.offset >= one.end:
                break
            if one.buffer.live_with(other.buffer) and one.buffer.nbytes and other.buffer.nbytes:
                raise AssertionError(
                    f"{one.buffer.name} and {other.buffer.name} are live together and overlap"
                )
