"""What a prunable layer costs on the board: the cycles LPViT's allocation weighs and the
pruning summary reports.

A layer's cycles with some of its tiles stored are ``estimate.layer_cost`` of its LINEAR
in the dense model compiled for the board: the same ArchConfig, precision and memory plan
as a build (weight masters, weights at their container width, the on-chip window, the
drain's lanes) under the board's DDR model. So the cycles a pruning saves are the ones the
build of the pruned model reports, fixed costs included (input-row reads, a drain that
outlasts the stored tiles, descriptor and round trips), not the UCU's tile stream alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..arch import ArchConfig, Board
from ..arch.ddr import DEFAULT_EFFICIENCY, DdrModel, ddr_model
from ..estimate import layer_cost, tile_count
from ..program import Op, Program
from .targets import PruneError

# the dense model is compiled for its shapes and memory plan only: formats from one random
# image, the quickest quantiser settings (they change no cycle)
_SHAPE_ONLY = {"calib": 1, "quant": "max", "rounding": "nearest", "weight_formats": "tensor"}


@dataclass
class BoardCosts:
    """The dense model's Program on `arch` and the DDR model its layers are costed under."""

    program: Program
    arch: ArchConfig
    board: Board
    ddr: DdrModel
    precision: str
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._linear = {layer.name: layer for layer in self.program.layers if layer.op == Op.LINEAR}

    @property
    def tile(self) -> tuple[int, int]:
        """The UCU tile (To, Ti) the Program was compiled for."""
        return (self.program.tile_out, self.program.tile_in)

    def tiles(self, name: str) -> int:
        """Weight tiles of layer `name` when dense."""
        return tile_count(self.program, self._layer(name))

    def cycles(self, name: str, stored_tiles: int) -> int:
        """Board cycles of layer `name` with `stored_tiles` of its weight tiles stored."""
        key = (name, int(stored_tiles))
        if key not in self._memo:
            layer = self._layer(name)
            self._memo[key] = layer_cost(self.program, self.arch, layer, self.ddr, None, key[1])[
                "cycles"
            ]
        return self._memo[key]

    def describe(self) -> dict:
        """The cost model, as the summary records it."""
        return {
            "model": "estimate.layer_cost of the dense model compiled for the board",
            "board": self.board.name,
            "precision": self.precision,
            "tile": list(self.tile),
            "weight_ports": self.arch.weight_ports,
            "drain_lanes": self.arch.output_lanes,
            "window_kib": self.program.window_bytes // 1024,
            "ddr": self.ddr.to_dict(),
        }

    def _layer(self, name: str):
        layer = self._linear.get(name)
        if layer is None:
            raise PruneError(
                f"layer {name!r} has no LINEAR of that name in the compiled model "
                f"(its LINEARs: {', '.join(self._linear) or 'none'})"
            )
        return layer


def board_costs(
    module: nn.Module,
    board: Board,
    arch: ArchConfig | None = None,
    precision=None,
    ddr_efficiency: float = DEFAULT_EFFICIENCY,
    given: bool = False,
    given_fields: frozenset[str] | None = None,
) -> BoardCosts:
    """Compile the dense `module` for `board` at `precision` as a build would and return
    its costs under the board's DDR model at `ddr_efficiency`. `arch`: the ArchConfig to
    start from (None: the board's default for `precision`); `given`, `given_fields`: a
    build's ``BuildOptions.arch is not None`` and ``arch_fields`` (the user's ``--arch``,
    compiled as that build compiles it); not given: a default, sized and shrunk until it
    fits, as a build without ``--arch`` does."""
    from ..arch.config import default_arch
    from ..flow import (
        BuildState,
        make_options,
        step_compile,
        step_convert,
        step_quantize,
        step_transform,
    )

    options = make_options(module, board.name, precision=precision, **_SHAPE_ONLY)
    if arch is None:
        arch = default_arch(board.name, None, options.precision)
    if given:
        options.arch, options.arch_fields = arch, given_fields
    state = BuildState(options, board=board, arch=arch, module=module)
    state.name = getattr(module, "name", None) or type(module).__name__.lower()
    for step in (step_convert, step_transform, step_quantize, step_compile):
        step(state)
    ddr = ddr_model(board, state.arch, efficiency=ddr_efficiency)
    return BoardCosts(state.program, state.arch, board, ddr, str(options.precision))


__all__ = ["BoardCosts", "board_costs"]
