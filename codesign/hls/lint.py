"""Static checks that rendered kernel code is something Vitis HLS can synthesise.

Vitis is not available here, so the rules it would enforce (or that make designs
unsynthesisable or unverifiable) are checked on the text of the kernel sources:

====================  ==================================================================
rule                  what it rejects
====================  ==================================================================
no-dynamic-memory     new / delete / malloc / calloc / realloc / free / alloca
no-recursion          a function that calls itself, directly or through others
no-stl                std:: containers and strings, and their headers
no-unbounded-pointer  pointer variables or parameters other than the AXI bus pointers
                      (bus_t *), unsized array parameters (``int a[]``), pointer-to-pointer
static-array-bounds   array dimensions that are not compile-time constants (VLAs)
loop-tripcount        a loop with a run-time bound whose body has no
                      ``#pragma HLS loop_tripcount``
m-axi-depth           an ``m_axi`` interface pragma without ``depth=``, or a pointer
                      argument of the top function without an ``m_axi`` pragma
forbidden-header      hls_math.h (a stub in the open headers), hls_vector.h, ap_axi_sdata.h
                      (absent), <cmath>/<math.h>
no-stream-depth       ``hls::stream<T, DEPTH>`` (use ``#pragma HLS stream depth=``)
integer-only          float / double types or floating literals (the bit-exact contract
                      is integer arithmetic)
====================  ==================================================================

Every issue names ``file:line``, the rule and what to change. Usage:
``python -m codesign.hls.lint DIR`` (or ``lint_sources({path: text})``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

RULES = (
    "no-dynamic-memory",
    "no-recursion",
    "no-stl",
    "no-unbounded-pointer",
    "static-array-bounds",
    "loop-tripcount",
    "m-axi-depth",
    "forbidden-header",
    "no-stream-depth",
    "integer-only",
)

_BUILTIN_TYPES = {
    "void",
    "bool",
    "char",
    "short",
    "int",
    "long",
    "unsigned",
    "signed",
    "float",
    "double",
    "auto",
    "size_t",
    "int8_t",
    "int16_t",
    "int32_t",
    "int64_t",
    "uint8_t",
    "uint16_t",
    "uint32_t",
    "uint64_t",
}
_TEMPLATE_TYPES = ("ap_int", "ap_uint", "ap_fixed", "ap_ufixed", "hls::stream")
_KEYWORDS = {
    "if",
    "for",
    "while",
    "switch",
    "return",
    "sizeof",
    "case",
    "do",
    "else",
    "static_cast",
    "reinterpret_cast",
    "const_cast",
    "dynamic_cast",
    "defined",
}
_STL_NAMES = (
    "vector",
    "string",
    "map",
    "set",
    "list",
    "deque",
    "queue",
    "stack",
    "unordered_map",
    "unordered_set",
    "array",
    "function",
    "shared_ptr",
    "unique_ptr",
    "basic_string",
    "multimap",
    "multiset",
    "priority_queue",
)
_STL_HEADERS = {*_STL_NAMES, "memory", "functional", "iostream", "sstream", "fstream"}
_FORBIDDEN_HEADERS = {
    "hls_math.h": "hls_math.h is only a stub in the open ap_types headers and its bits cannot "
    "be reproduced in numpy or RTL: use the Program's lookup tables",
    "hls_vector.h": "hls_vector.h is not in the open headers",
    "ap_axi_sdata.h": "ap_axi_sdata.h is not in the open headers",
    "cmath": "floating-point math has no place in the integer kernel",
    "math.h": "floating-point math has no place in the integer kernel",
}


@dataclass(frozen=True)
class LintIssue:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


# ---------------------------------------------------------------- text helpers


def strip_comments(text: str) -> str:
    """Blank out comments and string/char literals, keeping every newline (line numbers)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if ch == "/" and nxt == "/":
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif ch == "/" and nxt == "*":
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:end]))
            i = end
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(ch + " " * max(0, j - i - 2) + (ch if j - i >= 2 else ""))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _match(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket closing the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _split_top(text: str, sep: str, angle: bool = False) -> list[str]:
    """Split at `sep` outside brackets (and outside <...> when `angle`: template args)."""
    opening, closing = ("([{<", ")]}>") if angle else ("([{", ")]}")
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(text):
        if ch in opening:
            depth += 1
        elif ch in closing:
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return parts


_IDENT = re.compile(r"[A-Za-z_]\w*")


def _identifiers(expr: str) -> list[str]:
    # drop member accesses' right-hand sides? no: job.rows is run-time either way
    return [m.group(0) for m in _IDENT.finditer(expr)]


# ---------------------------------------------------------------- the checker


class _Checker:
    def __init__(self, sources: dict[str, str], top: str):
        self.raw = sources
        self.top = top
        self.code = {path: strip_comments(text) for path, text in sources.items()}
        self.issues: list[LintIssue] = []
        everything = "\n".join(self.code.values())
        self.types = set(_BUILTIN_TYPES)
        self.types.update(re.findall(r"\btypedef\b[^;]*?\b([A-Za-z_]\w*)\s*;", everything))
        self.types.update(re.findall(r"\b(?:struct|class|union|enum)\s+([A-Za-z_]\w*)", everything))
        self.constants = set(re.findall(r"^\s*#\s*define\s+([A-Za-z_]\w*)", everything, re.M))
        self.constants.update(
            re.findall(r"\b(?:constexpr|const)\s+[\w:<>, ]*?\b([A-Za-z_]\w*)\s*=", everything)
        )
        self.constants.update(re.findall(r"\btemplate\s*<[^>]*?\bint\s+([A-Za-z_]\w*)", everything))
        for body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", everything):
            self.constants.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=|,|$)", body))

    def add(self, path: str, pos_or_line: int, rule: str, message: str, *, is_line=False):
        line = pos_or_line if is_line else _line_of(self.code[path], pos_or_line)
        self.issues.append(LintIssue(path, line, rule, message))

    # -------------------------------------------------------------- type regex
    def _type_pattern(self) -> str:
        names = sorted(self.types, key=len, reverse=True)
        plain = "|".join(re.escape(n) for n in names)
        templ = "|".join(re.escape(n) for n in _TEMPLATE_TYPES)
        return rf"(?:(?:{templ})\s*<[^;{{}}()]*?>|\b(?:{plain})\b)"

    def run(self) -> list[LintIssue]:
        type_re = self._type_pattern()
        for path, code in self.code.items():
            self.check_includes(path, code)
            self.check_dynamic(path, code)
            self.check_stl(path, code)
            self.check_stream(path, code)
            self.check_float(path, code)
            self.check_pointers(path, code, type_re)
            self.check_arrays(path, code, type_re)
            self.check_loops(path, code)
            self.check_interfaces(path, code)
        self.check_recursion()
        return sorted(self.issues, key=lambda i: (i.path, i.line, i.rule))

    # -------------------------------------------------------------- rules
    def check_includes(self, path: str, code: str) -> None:
        for m in re.finditer(r'^\s*#\s*include\s*[<"]\s*([^>"\s]+)\s*[>"]', self.raw[path], re.M):
            header = m.group(1)
            base = header.split("/")[-1]
            if base in _FORBIDDEN_HEADERS:
                self.add(
                    path,
                    _line_of(self.raw[path], m.start()),
                    "forbidden-header",
                    f"#include <{header}>: {_FORBIDDEN_HEADERS[base]}",
                    is_line=True,
                )
            elif base in _STL_HEADERS:
                self.add(
                    path,
                    _line_of(self.raw[path], m.start()),
                    "no-stl",
                    f"#include <{header}>: STL containers and streams cannot be "
                    "synthesised; use fixed-size arrays",
                    is_line=True,
                )

    def check_dynamic(self, path: str, code: str) -> None:
        pattern = (
            r"\b(?P<what>new|delete)\b(?:\s*\[\s*\])?\s*[A-Za-z_(]"
            r"|\b(?P<call>malloc|calloc|realloc|free|alloca)\s*\("
        )
        for m in re.finditer(pattern, code):
            what = m["what"] or m["call"]
            self.add(
                path,
                m.start(),
                "no-dynamic-memory",
                f"'{what}': dynamic memory cannot be synthesised; use static arrays "
                "sized by the ArchConfig",
            )

    def check_stl(self, path: str, code: str) -> None:
        names = "|".join(_STL_NAMES)
        for m in re.finditer(rf"\bstd\s*::\s*({names})\b", code):
            self.add(
                path,
                m.start(),
                "no-stl",
                f"std::{m.group(1)}: STL containers cannot be synthesised; use fixed-size arrays",
            )

    def check_stream(self, path: str, code: str) -> None:
        for m in re.finditer(r"\bhls\s*::\s*stream\s*<", code):
            end = _match(code, m.end() - 1, "<", ">")
            if len(_split_top(code[m.end() : end - 1], ",", angle=True)) > 1:
                self.add(
                    path,
                    m.start(),
                    "no-stream-depth",
                    "hls::stream<T, DEPTH> does not compile with the open headers; use "
                    "hls::stream<T> and '#pragma HLS stream variable=... depth=N'",
                )

    def check_float(self, path: str, code: str) -> None:
        for m in re.finditer(r"\b(float|double)\b", code):
            self.add(
                path,
                m.start(),
                "integer-only",
                f"'{m.group(1)}' in kernel code: every value is a raw fixed-point integer "
                "(docs/numerics.md); floats would break bit-exactness",
            )
        for m in re.finditer(
            r"(?<![\w.])(?:\d+\.\d*|\.\d+|\d+(?=[eE][+-]?\d))(?:[eE][+-]?\d+)?[fF]?(?![\w.])", code
        ):
            if code[: m.start()].rstrip().endswith("#"):
                continue
            line_start = code.rfind("\n", 0, m.start()) + 1
            if code[line_start:].lstrip().startswith("#"):
                continue  # preprocessor lines (version numbers in #if etc.)
            self.add(
                path, m.start(), "integer-only", f"floating literal '{m.group(0)}' in kernel code"
            )

    def check_pointers(self, path: str, code: str, type_re: str) -> None:
        decl = re.compile(
            rf"(?P<lead>[(,;{{}}]|^|\n)\s*(?:(?:static|const|volatile|inline|register)\s+)*"
            rf"(?P<type>{type_re})\s*(?:const\s*)?(?P<stars>\*+)\s*(?:const\s+)?"
            rf"(?P<name>[A-Za-z_]\w*)\s*(?P<after>[,;=)\[])"
        )
        for m in decl.finditer(code):
            type_name = re.sub(r"\s+", " ", m["type"]).strip()
            is_param = m["lead"] in "(," and m["after"] in ",)"
            if len(m["stars"]) > 1:
                self.add(
                    path,
                    m.start("type"),
                    "no-unbounded-pointer",
                    f"'{m['name']}' is a pointer to pointer: HLS cannot bound it",
                )
            elif not (is_param and type_name == "bus_t"):
                kind = "parameter" if is_param else "variable"
                self.add(
                    path,
                    m.start("type"),
                    "no-unbounded-pointer",
                    f"pointer {kind} '{type_name} *{m['name']}': only the AXI bus pointers "
                    "(bus_t *) may be pointers; pass arrays with static bounds",
                )
        for m in re.finditer(rf"(?P<type>{type_re})\s*&?\s*(?P<name>[A-Za-z_]\w*)\s*\[\s*\]", code):
            self.add(
                path,
                m.start("type"),
                "no-unbounded-pointer",
                f"unsized array '{m['name']}[]': give it a compile-time bound",
            )

    def check_arrays(self, path: str, code: str, type_re: str) -> None:
        decl = re.compile(
            rf"(?P<type>{type_re})\s*(?:\(\s*&\s*)?(?P<name>[A-Za-z_]\w*)\s*\)?\s*(?P<dims>(?:\[[^\[\]]*\]\s*)+)"
        )
        for m in decl.finditer(code):
            # skip expressions like `int x = a[i]` (type followed by a name then '[' is a decl)
            for dim in re.findall(r"\[([^\[\]]*)\]", m["dims"]):
                if not dim.strip():
                    continue  # unsized: reported by no-unbounded-pointer
                unknown = [
                    name
                    for name in _identifiers(dim)
                    if name not in self.constants and name != "sizeof"
                ]
                if unknown:
                    self.add(
                        path,
                        m.start("name"),
                        "static-array-bounds",
                        f"array '{m['name']}[{dim.strip()}]' has a run-time dimension "
                        f"({', '.join(unknown)}): bounds must be compile-time constants",
                    )

    # -------------------------------------------------------------- loops
    def _loops(self, code: str) -> list[tuple[int, str, str, int, int]]:
        """(position, kind, condition text, body start, body end) of every loop."""
        loops = []
        do_whiles = set()
        for m in re.finditer(r"\bdo\b\s*\{", code):
            body_start = m.end() - 1
            body_end = _match(code, body_start, "{", "}")
            w = re.compile(r"\s*while\s*\(").match(code, body_end)
            cond = ""
            if w:
                cond_end = _match(code, w.end() - 1, "(", ")")
                cond = code[w.end() : cond_end - 1]
                do_whiles.add(w.end() - 1)
            loops.append((m.start(), "do", cond, body_start, body_end))
        for m in re.finditer(r"\b(for|while)\s*\(", code):
            paren = m.end() - 1
            if m.group(1) == "while" and paren in do_whiles:
                continue
            close = _match(code, paren, "(", ")")
            header = code[paren + 1 : close - 1]
            if m.group(1) == "for":
                parts = _split_top(header, ";")
                if len(parts) != 3:
                    continue  # range-for: bounded by its container's static size
                init, cond, step = parts
                loop_vars = set(_identifiers(step))
                loop_vars.update(re.findall(r"([A-Za-z_]\w*)\s*=(?!=)", init))
            else:
                cond, loop_vars = header, set()
            rest = re.compile(r"\s*").match(code, close).end()
            if rest < len(code) and code[rest] == "{":
                body_end = _match(code, rest, "{", "}")
            else:
                body_end = code.find(";", rest) + 1 or len(code)
            kind = m.group(1)
            cond_vars = [
                name
                for name in _identifiers(cond)
                if name not in loop_vars and name not in self.constants and name not in _KEYWORDS
            ]
            loops.append((m.start(), kind, ",".join(cond_vars) or "", rest, body_end))
        return loops

    def check_loops(self, path: str, code: str) -> None:
        loops = self._loops(code)
        for pos, kind, runtime, body_start, body_end in loops:
            if kind in ("while", "do"):
                runtime = runtime or "condition"
            if not runtime:
                continue
            # the body's own text: nested loops' bodies excluded
            own = list(code[body_start:body_end])
            for other in loops:
                if other[0] > body_start and other[4] <= body_end and other[0] != pos:
                    for k in range(other[0] - body_start, other[4] - body_start):
                        own[k] = " "
            own_text = "".join(own)
            if not re.search(r"#\s*pragma\s+HLS\s+loop_tripcount\b", own_text, re.I):
                self.add(
                    path,
                    pos,
                    "loop-tripcount",
                    f"{kind} loop with a run-time bound ({runtime}) needs "
                    "'#pragma HLS loop_tripcount min=.. max=..' in its body",
                )

    # -------------------------------------------------------------- interfaces
    def check_interfaces(self, path: str, code: str) -> None:
        pragmas = list(re.finditer(r"#\s*pragma\s+HLS\s+interface\b([^\n]*)", code, re.I))
        maxi_ports = set()
        for m in pragmas:
            args = m.group(1)
            if re.search(r"\bm_axi\b", args, re.I):
                port = re.search(r"\bport\s*=\s*([A-Za-z_]\w*)", args)
                if port:
                    maxi_ports.add(port.group(1))
                if not re.search(r"\bdepth\s*=\s*\w+", args, re.I):
                    self.add(
                        path,
                        m.start(),
                        "m-axi-depth",
                        "m_axi interface without 'depth=': C/RTL co-simulation needs the "
                        "buffer size",
                    )
        top = re.search(rf"\b{re.escape(self.top)}\s*\(([^)]*)\)\s*\{{", code)
        if top:
            for param in _split_top(top.group(1), ","):
                m = re.search(r"\*\s*([A-Za-z_]\w*)\s*$", param.strip())
                if m and m.group(1) not in maxi_ports:
                    self.add(
                        path,
                        top.start(),
                        "m-axi-depth",
                        f"top-level pointer argument '{m.group(1)}' has no m_axi "
                        "interface pragma (with depth=)",
                    )

    # -------------------------------------------------------------- recursion
    def check_recursion(self) -> None:
        definitions: dict[str, tuple[str, int, str]] = {}
        signature = re.compile(
            r"(?<![\w.>])([A-Za-z_]\w*)\s*\(([^;{}()]|\([^;{}()]*\))*\)\s*(?:const\s*)?\{"
        )
        for path, code in self.code.items():
            for m in signature.finditer(code):
                name = m.group(1)
                if name in _KEYWORDS:
                    continue
                body_start = m.end() - 1
                body = code[body_start : _match(code, body_start, "{", "}")]
                definitions.setdefault(name, (path, m.start(), body))
        calls = {
            name: {
                callee
                for callee in re.findall(r"(?<![\w.])([A-Za-z_]\w*)\s*(?:<[^;{}()]*>)?\s*\(", body)
                if callee in definitions
            }
            for name, (_path, _pos, body) in definitions.items()
        }
        reported = set()
        for start in definitions:
            stack = [(start, [start])]
            seen = set()
            while stack:
                node, chain = stack.pop()
                for callee in calls[node]:
                    if callee == start:
                        cycle = tuple(sorted(chain))
                        if cycle not in reported:
                            reported.add(cycle)
                            path, pos, _ = definitions[start]
                            loop = " -> ".join([*chain, start])
                            self.add(
                                path,
                                pos,
                                "no-recursion",
                                f"recursion {loop}: HLS needs a static call graph",
                            )
                    elif callee not in seen:
                        seen.add(callee)
                        stack.append((callee, [*chain, callee]))


def lint_sources(sources: dict[str, str], top: str = "codesign_top") -> list[LintIssue]:
    """Check kernel sources ({path: text}); returns the issues, empty when clean."""
    return _Checker(sources, top).run()


def lint_dir(path: str | Path, top: str = "codesign_top") -> list[LintIssue]:
    """Check every .h/.hpp/.cpp/.cc under `path` (an HLS project's src/)."""
    root = Path(path)
    files = sorted(
        p for p in root.rglob("*") if p.suffix in (".h", ".hpp", ".cpp", ".cc") and p.is_file()
    )
    return lint_sources({str(p.relative_to(root)): p.read_text() for p in files}, top)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m codesign.hls.lint <kernel source dir> [top function]")
        return 2
    issues = lint_dir(args[0], *(args[1:2]))
    for issue in issues:
        print(issue)
    print(f"{len(issues)} issue(s)")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["RULES", "LintIssue", "lint_dir", "lint_sources", "main", "strip_comments"]
