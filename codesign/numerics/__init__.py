"""Bit-exact numerics: ap_fixed-compatible formats and the lookup-table functions."""

from .fixed import *  # noqa: F403
from .fixed import __all__ as _fixed_all
from .tables import Table, build_tables, exp_neg, gelu, recip, rsqrt

__all__ = [*_fixed_all, "Table", "build_tables", "exp_neg", "gelu", "recip", "rsqrt"]
