"""Board and model names as users type them, resolved before anything heavy loads.

Kept free of torch so the CLI can refuse a typo in a fraction of a second: the docs spell
boards ``Ultra96-V2`` and ``PYNQ-Z2`` while the registry keys are ``ultra96v2`` and
``pynq-z2``; both spellings (any case, with or without ``-``/``_``/spaces) are accepted,
and an unknown name suggests the closest known one.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name.lower())


def _closest(name: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest known name, or nothing."""
    keys = {_key(k): k for k in known}
    match = difflib.get_close_matches(_key(name), list(keys), n=1, cutoff=0.6)
    return f" (did you mean {keys[match[0]]!r}?)" if match else ""


def resolve(name: object, known: list[str], kind: str, listing: str) -> str:
    """The registry key ``name`` stands for; ValueError naming the closest one if none."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{kind} must be a name, got {name!r}; {listing}: {', '.join(known)}")
    by_key = {_key(k): k for k in known}
    found = by_key.get(_key(name))
    if found is None:
        raise ValueError(
            f"unknown {kind} {name!r}{_closest(name, known)}; {listing}: {', '.join(known)}"
        )
    return found


def board_name(name: object) -> str:
    """``'Ultra96-V2'`` -> ``'ultra96v2'``; a typo names the closest board."""
    from .arch.boards import BOARDS  # plain data, no torch

    return resolve(name, list(BOARDS), "board", "known boards")


def registered_models() -> list[str]:
    return sorted(path.stem for path in MODELS_DIR.glob("*.yaml"))


def model_name(name: object) -> str:
    """A registered model's name for ``name`` (``M3ViT_tiny`` -> ``m3vit-tiny``), or ``name``
    unchanged when it is a path to a YAML config or a ``timm:NAME[:key=value,...]`` spec;
    a typo names the closest model."""
    if isinstance(name, str) and name.startswith("timm:"):
        from .models.timm_support import parse_spec

        parse_spec(name)  # the name itself is checked when timm makes the model
        return name
    if isinstance(name, Path) or (isinstance(name, str) and name.endswith((".yaml", ".yml"))):
        if not Path(name).is_file():
            raise ValueError(f"model config not found: {name}")
        return str(name)
    return resolve(name, registered_models(), "model", "registered models")
