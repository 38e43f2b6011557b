"""Quantisation study: float vs w16a24, w8a16, w8a8 on the digits ViT and on m3vit.

    python benchmarks/quant_study.py                  # ~5 min
    python benchmarks/quant_study.py --json out.json --write-docs

Digits ViT (the shipped checkpoint, 98.33 % float): test accuracy of the golden executor
on the 360 test digits, top-1 agreement and logit cosine vs torch, for each precision,
formats by the calibrated maximum ("max") or by LayerNorm smoothing + MSE-chosen ranges
("auto", what a build does for activations of 12 bits or fewer), calibrated on 4 random
images or on 64 training digits. m3vit (seeded weights, no trained checkpoint): cosine
and decision agreement (semseg argmax per patch) vs torch over `--m3vit-images` images.
Per-output-channel weight formats and W8A8 DSP packing are not in the toolkit yet; rows
for them will come with them. ``--write-docs`` puts the tables in docs/quantization.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import codesign
from codesign.datasets import load_digits
from codesign.models import create_model
from codesign.train import predict_logits
from codesign.util import replace_marked

DOCS = Path(__file__).resolve().parents[1] / "docs" / "quantization.md"
PRECISIONS = ("w16a24", "w8a16", "w8a8")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def digits_rows(calibs: dict) -> tuple[list[dict], float]:
    model = create_model("digits-vit")
    data = load_digits(size=16)
    images, labels = data.test.images, data.test.labels
    reference = predict_logits(model, images)
    float_acc = float((reference.argmax(1) == labels).mean())
    rows = []
    for calib_name, calib in calibs.items():
        for precision in PRECISIONS:
            for quant in ("max", "auto"):
                if quant == "auto" and int(precision.split("a")[1]) > 12:
                    continue  # auto == max above 12-bit activations
                started = time.perf_counter()
                build = codesign.build(
                    "digits-vit", "zcu102", precision=precision, calib=calib, quant=quant,
                    eval_images=images[:2], plot=False,
                )  # fmt: skip
                logits = build.predict(images)
                rows.append({
                    "model": "digits-vit", "precision": precision, "quant": quant,
                    "calib": calib_name,
                    "accuracy": float((logits.argmax(1) == labels).mean()),
                    "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
                    "cosine": cosine(logits, reference),
                    "seconds": round(time.perf_counter() - started, 1),
                })  # fmt: skip
    return rows, float_acc


def m3vit_rows(images: int) -> list[dict]:
    """m3vit has no dataset: its inputs here are Gaussian images. With the default (4
    random images, flagged as random) a build keeps max ranges; given images like its
    inputs (an array: the user vouches for them) it also searches the ranges."""
    like_inputs = np.random.default_rng(7).standard_normal((16, 3, 128, 256))
    rows = []
    for precision in PRECISIONS:
        for quant, calib_name, calib in (("max", "4 random", None), ("auto", "4 random", None),
                                         ("auto", "16 like the inputs", like_inputs)):  # fmt: skip
            if quant == "auto" and int(precision.split("a")[1]) > 12:
                continue
            started = time.perf_counter()
            build = codesign.build(
                "m3vit", "zcu102", precision=precision, quant=quant, eval_images=images,
                plot=False, calib=calib,
            )  # fmt: skip
            per_task = build.report["fidelity"]["vs_torch"]["per_task"]
            rows.append({
                "model": "m3vit", "precision": precision, "quant": quant,
                "calib": calib_name,
                "cosine_semseg": per_task["semseg"]["cosine"],
                "agreement": per_task["semseg"]["agreement"],
                "cosine_depth": per_task["depth"]["cosine"],
                "seconds": round(time.perf_counter() - started, 1),
            })  # fmt: skip
    return rows


def markdown(digits: list[dict], float_acc: float, m3vit: list[dict], images: int) -> str:
    lines = [
        f"Digits ViT (float {100 * float_acc:.2f} % on the 360 test digits):",
        "",
        "| precision | formats | calibration | accuracy | top-1 agreement | cosine |",
        "|---|---|---|---|---|---|",
    ]
    for r in digits:
        lines.append(
            f"| {r['precision']} | {r['quant']} | {r['calib']} | {100 * r['accuracy']:.2f} % | "
            f"{100 * r['agreement']:.2f} % | {r['cosine']:.6f} |"
        )
    lines += [
        "",
        f"m3vit (seeded weights, {images} images, semseg decisions = argmax per patch):",
        "",
        "| precision | formats | calibration | semseg cosine | semseg agreement | depth cosine |",
        "|---|---|---|---|---|---|",
    ]
    for r in m3vit:
        lines.append(
            f"| {r['precision']} | {r['quant']} | {r['calib']} | {r['cosine_semseg']:.5f} | "
            f"{100 * r['agreement']:.2f} % | {r['cosine_depth']:.5f} |"
        )
    lines += ["", "Measured by `python benchmarks/quant_study.py` (golden executor)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m3vit-images", type=int, default=2)
    parser.add_argument("--skip-m3vit", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    console = Console(width=160)
    data = load_digits(size=16)
    calibs = {"4 random": 4, "64 digits": data.train.images[:64]}
    digits, float_acc = digits_rows(calibs)
    m3vit = [] if args.skip_m3vit else m3vit_rows(args.m3vit_images)
    table = Table("model", "precision", "formats", "calibration", "accuracy", "agreement",
                  "cosine")  # fmt: skip
    for r in digits:
        table.add_row(r["model"], r["precision"], r["quant"], r["calib"],
                      f"{100 * r['accuracy']:.2f}", f"{100 * r['agreement']:.2f}",
                      f"{r['cosine']:.6f}")  # fmt: skip
    for r in m3vit:
        table.add_row(r["model"], r["precision"], r["quant"], r["calib"], "-",
                      f"{100 * r['agreement']:.2f}",
                      f"{r['cosine_semseg']:.5f} / {r['cosine_depth']:.5f}")  # fmt: skip
    console.print(f"digits-vit float accuracy {100 * float_acc:.2f} %")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"float_accuracy": float_acc, "digits": digits,
                                         "m3vit": m3vit}, indent=1))  # fmt: skip
    if args.write_docs:
        replace_marked(DOCS, "quant_study", markdown(digits, float_acc, m3vit, args.m3vit_images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
