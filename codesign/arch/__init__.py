"""Hardware description: boards as data, the accelerator's ArchConfig and its register map."""

from .boards import BOARDS, Board, get_board, list_boards
from .config import ArchConfig, Precision, parse_precision
from .regmap import RegisterMap, register_map

__all__ = [
    "BOARDS",
    "ArchConfig",
    "Board",
    "Precision",
    "RegisterMap",
    "get_board",
    "list_boards",
    "parse_precision",
    "register_map",
]
