"""Choosing an ArchConfig that fits the board when the user did not give one: within the
fit margins (``codesign.rtl.FIT_LIMITS``) once the figures come from the Yosys-calibrated
model (a user's own ArchConfig need only fit the part).

Resources depend only on the ArchConfig and the Program's formats and ops (not on its
weights), so candidates are costed against one compiled Program and the chosen one is
then compiled for real. Order of preference: the board's default; the default with
its buffers sized to this model; then fewer attention slots, fewer attention lanes and
smaller UCU tiles (``candidates``), until the design fits.
"""

from __future__ import annotations

from .arch import ArchConfig, Board
from .estimate import DesignDoesNotFit, estimate_resources
from .estimate.resources import choice_problems
from .ir import Graph

MIN_TILE = 4
MIN_LANES = 8  # attention lanes: below this the per-key pipeline overhead dominates


def _round_up(value: int, step: int) -> int:
    return -(-int(value) // step) * step


def model_limits(graph: Graph) -> dict[str, int]:
    """The smallest ArchConfig maxima that hold this model's Program (see ``model_tables``
    for the GELU table it needs)."""
    # no MoE op: max_experts 0, a design without the MoE engine
    in_dims, out_dims, hidden, experts = [1], [1], [1], [0]
    for node in graph.nodes:
        if node.op == "linear":
            out_dim, in_dim = node.params["weight"].shape
            in_dims.append(in_dim)
            out_dims.append(out_dim)
        elif node.op == "moe":
            hidden.append(node.params["fc1_weight"].shape[1])
            experts.append(node.attrs["experts"])
    dim = graph.meta["dim"]
    return {
        "max_tokens": _round_up(graph.meta["tokens"], 16),
        "max_dim": _round_up(dim, 32),
        "max_hidden": _round_up(max(max(hidden), *(o for o in out_dims if o != 3 * dim)), 32),
        "max_in_dim": _round_up(max(in_dims), 32),
        "max_experts": max(experts),
        "max_heads": graph.meta["heads"],
    }


def model_tables(graph: Graph) -> dict[str, str]:
    """The ArchConfig table choices this model needs: its GELU variant."""
    from .compiler import gelu_kind

    kind = gelu_kind(graph)
    return {"gelu": kind} if kind else {}


def window_granule_kib(arch: ArchConfig) -> int:
    """KiB the on-chip window grows by: 4,096 bus beats (one UltraRAM column deep, four
    block RAMs at 36 bits), so a window is whole primitives."""
    return 4 * arch.bus_bytes


def sized_window(arch: ArchConfig, program) -> ArchConfig:
    """`arch` with its on-chip window cut to what `program`'s memory plan placed there
    (in whole granules): RAM the model never touches is only cost. The plan is the same
    at the smaller window (every buffer placed in it ends by the plan's boundary)."""
    if not arch.arena_window_kib:
        return arch
    granule = window_granule_kib(arch)
    used = -(-program.window_bytes // (granule * 1024)) * granule
    return arch.with_(arena_window_kib=min(arch.arena_window_kib, used))


def _fits(program, arch: ArchConfig, board: Board) -> list[str]:
    """Why `arch` is not a safe choice on `board`: beyond its capacity, or, when the figures
    come from the Yosys-calibrated model, beyond its fit margins."""
    return choice_problems(estimate_resources(program, arch, board), board)


def _fewer_lanes(arch: ArchConfig) -> ArchConfig:
    """Half the attention lanes (the largest power of two below the current count)."""
    lanes = arch.attention_lanes
    return arch.with_(attn_lanes=1 << ((lanes - 1).bit_length() - 1))


def candidates(base: ArchConfig, limits: dict[str, int]):
    """The base, the base sized to the model, then ever smaller designs: attention slots
    first, then attention lanes down to the UCU's input tile, then the UCU tiles, then the
    rest of the attention down to one slot of MIN_LANES lanes."""
    yield base
    sized = base.with_(**limits)
    yield sized
    arch = sized
    while (arch.attn_parallel > 1 or max(arch.tile_in, arch.tile_out) > MIN_TILE
           or arch.attention_lanes > MIN_LANES):  # fmt: skip
        if arch.attn_parallel > max(1, min(arch.tile_in, arch.tile_out) // 8):
            arch = arch.with_(attn_parallel=arch.attn_parallel // 2)
        elif arch.attention_lanes > max(MIN_LANES, arch.tile_in):
            arch = _fewer_lanes(arch)
        elif arch.tile_in >= arch.tile_out and arch.tile_in > MIN_TILE:
            arch = arch.with_(tile_in=arch.tile_in // 2)
        elif arch.tile_out > MIN_TILE:
            arch = arch.with_(tile_out=arch.tile_out // 2)
        elif arch.attn_parallel > 1:
            arch = arch.with_(attn_parallel=arch.attn_parallel // 2)
        else:
            arch = _fewer_lanes(arch)
        yield arch


def choose_arch(program, graph: Graph, board: Board, base: ArchConfig) -> tuple[ArchConfig, list]:
    """The first candidate that fits, and the list of (arch, problems) tried before it."""
    tried = []
    for arch in candidates(base, model_limits(graph)):
        problems = _fits(program, arch, board)
        if not problems:
            return arch, tried
        tried.append((arch, problems))
    smallest, last = tried[-1]
    raise DesignDoesNotFit(
        f"no ArchConfig fits {board.name}. With the board's default: "
        + "; ".join(tried[0][1])
        + f". Even at {smallest.tile_out}x{smallest.tile_in} tiles, {smallest.attn_parallel} "
        f"attention slot(s) of {smallest.attention_lanes} lanes and buffers sized to the "
        "model: " + "; ".join(last) + ". Try a narrower --precision (`codesign explore "
        "--precision w8a16,w8a8` lists the designs that fit) or a larger board."
    )
