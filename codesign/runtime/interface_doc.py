"""Render docs/interface.md (register map, buffer layout, host example) from the code.

python -m codesign.runtime.interface_doc           # rewrite docs/interface.md
python -m codesign.runtime.interface_doc --check   # exit 1 when it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..arch import ArchConfig, register_map
from ..arch.regmap import AP_DONE, AP_IDLE, AP_READY, AP_START, AUTO_RESTART
from ..contract import CHECK_ERRORS, STATUS_OFFSET
from ..numerics.fixed import OVERFLOW, ROUNDING
from ..program import _H_GEOMETRY, _H_INPUT, _H_OUTPUTS, _H_WINDOW, HEADER_FIELDS
from ..templates import environment
from ..util import generated_doc_main

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "interface.md"

HEADER_USES = {
    "total_bytes": "program size in bytes (the program buffer is this, padded to a beat)",
    "arena_bytes": "arena size in bytes",
    "bus_bits": "AXI data width the Program is packed for",
    "n_tasks": "number of tasks (valid `task` values are 0 .. n_tasks - 1)",
    "crc32": "CRC-32 (zlib) of the whole file with this word read as zero: check it",
}
CTRL_ACCESS = (
    ("ap_start", AP_START, "R/W: host writes 1 to start; the kernel clears it on taking the run"),
    ("ap_done", AP_DONE, "R, clear on read: the run finished"),
    ("ap_idle", AP_IDLE, "R: no run in progress"),
    ("ap_ready", AP_READY, "R, clear on read: the kernel can take new arguments"),
    ("auto_restart", AUTO_RESTART, "R/W: restart after each run (not used by the driver)"),
)


def render() -> str:
    env = environment("runtime")
    arch = ArchConfig()
    regmap = register_map()
    words = {name: 2 + index for index, name in enumerate(HEADER_FIELDS)}
    header_words = [(name, words[name], use) for name, use in HEADER_USES.items()]
    header_words.append(("input ref", f"{_H_INPUT}–{_H_INPUT + 4}", "where the input rows go"))
    header_words.append(
        ("output ref of task t", f"{_H_OUTPUTS} + 5t …", "where task t's output rows are")
    )
    header_words.append(
        ("image geometry", f"{_H_GEOMETRY}–{_H_GEOMETRY + 3}", "channels, patch, height, width")
    )
    header_words.append(
        (
            "window_bytes",
            _H_WINDOW,
            "arena offsets below it are the kernel's on-chip window: the host never sees "
            "them (the buffer still spans arena_bytes), the input and outputs lie past it",
        )
    )
    example = (Path(__file__).parent / "minimal_host.py").read_text().rstrip("\n")
    return env.get_template("interface.md.j2").render(
        regmap_size=f"0x{regmap.size:X}",
        registers=regmap.registers,
        weight_registers=[r for r in register_map(4).registers if r.name.startswith("weights")],
        ctrl_bits=CTRL_ACCESS,
        bus_bits=arch.bus_bits,
        bus_bytes=arch.bus_bytes,
        header_words=header_words,
        arena_word=words["arena_bytes"],
        input_word=_H_INPUT,
        outputs_word=_H_OUTPUTS,
        rounding=ROUNDING,
        overflow=OVERFLOW,
        example=example,
        geometry_word=_H_GEOMETRY,
        status_offset=STATUS_OFFSET,
        check_errors=CHECK_ERRORS,
    )


def main(argv: list[str]) -> int:
    return generated_doc_main(DOC, render(), argv, "python -m codesign.runtime.interface_doc")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
