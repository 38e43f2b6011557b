"""Program fuzzing at scale: golden executor vs C-sim kernel on many mutants.

    python benchmarks/fuzz_programs.py [--mutants 20000] [--batch 2000] [--json]

Mutants of m3vit-tiny (dense, and block-sparse after LPViT pruning) on the small
ArchConfig the tests use, in batches of fresh seeds (codesign.fuzz): header words and
descriptor fields set to edge values, bit flips, data words, truncation, appended
garbage, stale CRCs, task arguments out of range. Prints the verdicts per executor, the
crashes, hangs, disagreements and bit differences (all must be 0), and the throughput.
The C-sim side runs in a child process beside the golden side (2 processes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from small_models import ARCH_TINY

import codesign
from codesign import fuzz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    builds = {
        "dense": codesign.build("m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=1),
        "sparse": codesign.build(
            "m3vit-tiny", board="zcu102", arch=ARCH_TINY, eval_images=1, prune="lpvit:0.5"
        ),
    }
    totals = {
        "tried": 0,
        "both_ran": 0,
        "golden": Counter(),
        "csim": Counter(),
        "kinds": Counter(),
        "crashes": [],
        "disagreements": [],
        "bit_differences": [],
    }
    began = time.perf_counter()
    batches = -(-args.mutants // args.batch)
    for number in range(batches):
        which = "dense" if number % 2 == 0 else "sparse"
        build = builds[which]
        meta = build.graph.meta
        images = np.random.default_rng(number).standard_normal(
            (1, meta["in_chans"], *meta["image_size"])
        )
        raw = build.quantize_input(images)[0]
        count = min(args.batch, args.mutants - totals["tried"])
        report = fuzz.compare(build.program_bytes, ARCH_TINY, raw, count, args.seed + number, 2)
        totals["tried"] += report.tried
        totals["both_ran"] += report.both_ran
        for key in ("golden", "csim", "kinds"):
            totals[key].update(getattr(report, key))
        for key in ("crashes", "disagreements", "bit_differences"):
            totals[key] += [f"{which} seed {args.seed + number}: {x}" for x in getattr(report, key)]
        if not args.json:
            elapsed = time.perf_counter() - began
            print(f"batch {number + 1}/{batches} ({which}): {totals['tried']} mutants, "
                  f"{elapsed:.0f} s", file=sys.stderr)  # fmt: skip
    seconds = time.perf_counter() - began
    result = {
        "mutants": totals["tried"],
        "seconds": round(seconds, 1),
        "mutants_per_s": round(totals["tried"] / seconds, 1),
        "both_ran": totals["both_ran"],
        "kinds": dict(totals["kinds"]),
        "golden": dict(totals["golden"]),
        "csim": dict(totals["csim"]),
        "crashes": totals["crashes"],
        "hangs": [c for c in totals["crashes"] if "hang" in c],
        "disagreements": totals["disagreements"],
        "bit_differences": totals["bit_differences"],
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['mutants']} mutants in {seconds:.0f} s ({result['mutants_per_s']}/s)")
        print(f"  kinds: {dict(sorted(result['kinds'].items()))}")
        for side in ("golden", "csim"):
            print(f"  {side:6}: {dict(sorted(result[side].items()))}")
        print(f"  both ran: {result['both_ran']}")
        for key in ("crashes", "hangs", "disagreements", "bit_differences"):
            print(f"  {key}: {len(result[key])}")
            for line in result[key][:20]:
                print(f"    {line}")
    failed = result["crashes"] or result["disagreements"] or result["bit_differences"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
