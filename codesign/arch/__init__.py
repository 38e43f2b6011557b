"""Hardware description: boards as data, the accelerator's ArchConfig and its register map."""

from .boards import BOARDS, Board, get_board, list_boards
from .config import ArchConfig, Precision, parse_precision
from .ddr import DdrModel, ddr_model
from .regmap import RegisterMap, register_map, weight_registers

__all__ = [
    "BOARDS",
    "ArchConfig",
    "Board",
    "DdrModel",
    "Precision",
    "RegisterMap",
    "ddr_model",
    "get_board",
    "list_boards",
    "parse_precision",
    "register_map",
    "weight_registers",
]
