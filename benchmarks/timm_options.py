"""Every timm option of docs/timm.md on a ViT trained on digits: accuracy vs timm.

    python benchmarks/timm_options.py                       # all options, ~10 min
    python benchmarks/timm_options.py --options "qk_norm=True" --epochs 20
    python benchmarks/timm_options.py --json out.json --write-docs

For each option a timm ViT (timm's own constructor with that option: 16x16 one-channel
images, patch 4, dim 64, depth 4, 2 heads) is trained on scikit-learn's digits, then
built for the ZCU102 at each precision, calibrated on 64 training images. On the whole
test split (360 images): timm's float accuracy, the golden executor's accuracy, top-1
agreement and cosine of the logits vs timm, and whether the HLS kernel's C-simulation
(g++) gives the golden executor's outputs bit for bit on every image. ``--write-docs``
puts the table in docs/timm.md (between the ``timm_options`` markers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import codesign
from codesign.datasets import load_digits
from codesign.models.timm_support import OPTIONS, import_timm, timm_vit
from codesign.train import accuracy, cross_entropy_loss, fit, predict_logits
from codesign.util import replace_marked

DIGITS_VIT = {"img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 64, "depth": 4,
              "num_heads": 2}  # fmt: skip
DOCS = Path(__file__).resolve().parents[1] / "docs" / "timm.md"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_option(option: str, data, epochs: int, precisions: list[str], csim: bool) -> dict:
    model = timm_vit(option, num_classes=10, seed=0, **DIGITS_VIT)
    started = time.perf_counter()
    fit(model, data.train.images, data.train.labels, cross_entropy_loss(0.1), epochs=epochs,
        lr=2e-3, max_shift=1, seed=0)  # fmt: skip
    trained = time.perf_counter() - started
    images, labels = data.test.images, data.test.labels
    reference = predict_logits(model, images)
    entry = {
        "option": option,
        "train_seconds": round(trained, 1),
        "timm_accuracy": accuracy(model, images, labels),
        "precisions": {},
    }
    for precision in precisions:
        started = time.perf_counter()
        build = codesign.build(
            model, "zcu102", precision=precision, calib=data.train.images[:64],
            eval_images=images[:2], plot=False,
        )  # fmt: skip
        golden = build.predict(images)
        result = {
            "accuracy": float((golden.argmax(1) == labels).mean()),
            "agreement": float((golden.argmax(1) == reference.argmax(1)).mean()),
            "cosine": cosine(golden, reference),
            "gelu": build.state.arch.gelu,
            "layers": len(build.program.layers),
        }
        if csim:
            from codesign.hls.csim import csim_unavailable

            reason = csim_unavailable()
            if reason is None:
                result["csim_bit_exact"] = bool(
                    np.array_equal(build.predict(images, executor="csim"), golden)
                )
            else:
                result["csim_bit_exact"] = None
                result["csim_reason"] = reason
        result["seconds"] = round(time.perf_counter() - started, 1)
        entry["precisions"][precision] = result
    return entry


def markdown(entries: list[dict], precisions: list[str], epochs: int) -> str:
    head = ["option", "timm acc"]
    for p in precisions:
        head += [f"{p} acc", f"{p} top-1 agr.", f"{p} cosine", f"{p} C-sim"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        cells = [f"`{e['option']}`", f"{100 * e['timm_accuracy']:.2f} %"]
        for p in precisions:
            r = e["precisions"][p]
            exact = {True: "bit-exact", False: "**differs**", None: "not run"}[
                r.get("csim_bit_exact")
            ]
            cells += [f"{100 * r['accuracy']:.2f} %", f"{100 * r['agreement']:.2f} %",
                      f"{r['cosine']:.6f}", exact]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Measured by `python benchmarks/timm_options.py` ({epochs} epochs each; test split "
        "of 360 digits; C-sim on all 360 images, compared with the golden executor's outputs)."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--options", nargs="*", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--precisions", nargs="*", default=["w16a24", "w8a16"])
    parser.add_argument("--no-csim", action="store_true", help="skip the C-simulation")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--write-docs", action="store_true", help="update docs/timm.md")
    args = parser.parse_args(argv)
    timm, reason = import_timm()
    if timm is None:
        print(reason, file=sys.stderr)
        return 2
    console = Console(width=160)
    data = load_digits(size=DIGITS_VIT["img_size"])
    entries = []
    with Progress(console=console) as progress:
        job = progress.add_task("options", total=len(args.options))
        for option in args.options:
            progress.update(job, description=f"train + build: {option}")
            entries.append(run_option(option, data, args.epochs, args.precisions, not args.no_csim))
            progress.advance(job)
    table = Table("option", "timm acc", *(f"{p} acc / agr / cos / C-sim" for p in args.precisions))
    for e in entries:
        cells = []
        for p in args.precisions:
            r = e["precisions"][p]
            cells.append(f"{100 * r['accuracy']:.2f} / {100 * r['agreement']:.2f} / "
                         f"{r['cosine']:.6f} / {r.get('csim_bit_exact')}")  # fmt: skip
        table.add_row(e["option"], f"{100 * e['timm_accuracy']:.2f}", *cells)
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"epochs": args.epochs, "runs": entries}, indent=1))
    if args.write_docs:
        replace_marked(DOCS, "timm_options", markdown(entries, args.precisions, args.epochs))
        console.print(f"wrote the table into {DOCS.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
