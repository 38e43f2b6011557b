"""Quantisation study: float against each precision of PRECISIONS on the digits ViT and m3vit.

    python benchmarks/quant_study.py                  # ~70 min (+7 min training, once)
    python benchmarks/quant_study.py --json out.json --write-docs
    python benchmarks/quant_study.py --only-scenes --scene-images 64   # ~30 min
    python benchmarks/quant_study.py --precisions w16a16 --scene-images 64   # one precision

Digits ViT (the shipped checkpoint): test accuracy of the golden executor on the 360 test
digits, top-1 agreement and logit cosine vs torch, calibrated on 4 random images or on 64
training digits. m3vit (seeded weights, no trained checkpoint): cosine, rel RMS and
decision agreement (semseg argmax per patch) vs torch over `--m3vit-images` images. For
each precision: activations by their calibrated maximum ("max") or by LayerNorm smoothing
+ MSE-chosen ranges ("auto", what a build does at 12 bits or fewer; w8a8r16: the same
with a 16-bit residual stream); weights per tensor or per output channel, rounded to
nearest or by GPTQ (``codesign.rounding``). m3vit trained on digit scenes
(``codesign.train.scene_checkpoint``): the same against torch on test scenes, with each
task's own metric, calibrated on training scenes.
``--write-docs`` puts the tables in docs/quantization.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import codesign
from codesign.arch import parse_precision
from codesign.datasets import load_digits
from codesign.fidelity import agreement, compare
from codesign.models import create_model
from codesign.train import predict_logits, scene_checkpoint, scene_metrics
from codesign.util import replace_marked

DOCS = Path(__file__).resolve().parents[1] / "docs" / "quantization.md"
PRECISIONS = ("w16a24", "w16a16", "w8a16", "w8a8", "w8a8r16", "w4a16")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# (weight formats, rounding): the weight variants each precision is measured with
WEIGHTS = (("tensor", "nearest"), ("channel", "nearest"), ("channel", "gptq"))


def variants(precision: str, m3vit: bool = False):
    """(activation method, weight formats, rounding) rows of one precision: activations by
    their maximum ("max") and, at 12 bits or fewer, by smoothing + search ("auto"); weights
    per tensor / per channel, rounded to nearest / by GPTQ (above 8 bits: nearest only,
    GPTQ's gain there is below what the table shows)."""
    spec = parse_precision(precision)
    narrow_acts = spec.activation_bits <= 12
    narrow_weights = spec.weight_bits <= 8
    weights = WEIGHTS if narrow_weights else WEIGHTS[1:2]
    for quant in ("max", "auto") if narrow_acts and not m3vit else ("auto",):
        for weight_formats, rounding in weights:
            yield quant, weight_formats, rounding


def digits_rows(calibs: dict, precisions=PRECISIONS) -> tuple[list[dict], float]:
    model = create_model("digits-vit")
    data = load_digits(size=16)
    images, labels = data.test.images, data.test.labels
    reference = predict_logits(model, images)
    float_acc = float((reference.argmax(1) == labels).mean())
    rows = []
    for calib_name, calib in calibs.items():
        for precision in precisions:
            for quant, weight_formats, rounding in variants(precision):
                started = time.perf_counter()
                build = codesign.build(
                    "digits-vit", "zcu102", precision=precision, calib=calib, quant=quant,
                    weight_formats=weight_formats, rounding=rounding, eval_images=images[:2],
                    plot=False,
                )  # fmt: skip
                logits = build.predict(images)
                rows.append({
                    "model": "digits-vit", "precision": precision, "quant": quant,
                    "weights": weight_formats, "rounding": rounding, "calib": calib_name,
                    "accuracy": float((logits.argmax(1) == labels).mean()),
                    "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
                    "cosine": cosine(logits, reference),
                    "seconds": round(time.perf_counter() - started, 1),
                })  # fmt: skip
    return rows, float_acc


def m3vit_builds(precisions=PRECISIONS, **options):
    """m3vit built for the ZCU102 at each of `precisions` and weight variant the study
    measures: (the row's variant fields, the build's start time, the build); ``options`` go
    to ``codesign.build``."""
    for precision in precisions:
        for quant, weight_formats, rounding in variants(precision, m3vit=True):
            started = time.perf_counter()
            build = codesign.build(
                "m3vit", "zcu102", precision=precision, quant=quant, plot=False,
                weight_formats=weight_formats, rounding=rounding, **options,
            )  # fmt: skip
            variant = {"precision": precision, "quant": quant, "weights": weight_formats,
                       "rounding": rounding}  # fmt: skip
            yield variant, started, build


def m3vit_rows(images: int, precisions=PRECISIONS) -> list[dict]:
    """m3vit has no dataset: its inputs here are Gaussian images, and the calibration 16
    more of them (an array: the user vouches for them being like the inputs, so narrow
    activations also get searched ranges)."""
    like_inputs = np.random.default_rng(7).standard_normal((16, 3, 128, 256))
    rows = []
    builds = m3vit_builds(precisions, eval_images=images, calib=like_inputs)
    for variant, started, build in builds:
        per_task = build.report["fidelity"]["vs_torch"]["per_task"]
        rows.append({
            "model": "m3vit", **variant, "calib": "16 like the inputs",
            "cosine_semseg": per_task["semseg"]["cosine"],
            "agreement": per_task["semseg"]["agreement"],
            "rel_rms_semseg": per_task["semseg"]["rel_rms"],
            "cosine_depth": per_task["depth"]["cosine"],
            "seconds": round(time.perf_counter() - started, 1),
        })  # fmt: skip
    return rows


def scene_rows(images: int, calib_count: int, precisions=PRECISIONS) -> tuple[list[dict], dict]:
    """m3vit trained on digit scenes (``codesign.train.scene_checkpoint``: trained on the
    first run, then cached): its decisions are not near-ties, as a random model's are.
    Calibrated on training scenes (real images: ranges searched at narrow activations),
    measured on test scenes: both tasks vs torch, and each task's own metric (patch
    accuracy, depth RMS) in float and in fixed point."""
    checkpoint, data = scene_checkpoint("m3vit", progress=True)
    model = create_model("m3vit", weights=checkpoint)
    test_images = data.test.images[:images]
    test_labels = data.test.labels[:images]
    with torch.no_grad():
        x = torch.as_tensor(test_images)
        reference = [model(x, task).numpy() for task in (0, 1)]
    floats = scene_metrics(*reference, test_labels)
    rows = []
    calib = data.train.images[:calib_count]
    builds = m3vit_builds(precisions, weights=checkpoint, eval_images=1, calib=calib)
    for variant, started, build in builds:
        outputs = [build.predict(test_images, task=task) for task in (0, 1)]
        semseg = compare(outputs[0], reference[0])
        depth = compare(outputs[1], reference[1])
        rows.append({
            "model": "m3vit (scenes)", **variant,
            "calib": f"{calib_count} scenes",
            "cosine_semseg": semseg["cosine"], "rel_rms_semseg": semseg["rel_rms"],
            "agreement": agreement(outputs[0], reference[0]),
            "cosine_depth": depth["cosine"], "rel_rms_depth": depth["rel_rms"],
            **scene_metrics(*outputs, test_labels),
            "seconds": round(time.perf_counter() - started, 1),
        })  # fmt: skip
    return rows, floats


def scene_markdown(rows: list[dict], floats: dict, images: int, calib_count: int) -> str:
    lines = [
        f"m3vit trained on digit scenes (`codesign.train.scene_checkpoint`; float: patch "
        f"accuracy {100 * floats['patch_accuracy']:.2f} %, depth RMS "
        f"{floats['depth_rms']:.2f}), {images} test scenes ({images * 128:,} patch "
        f"decisions), calibrated on {calib_count} training scenes:",
        "",
        "| precision | weights | rounding | semseg cosine | semseg rel RMS | semseg agreement "
        "| patch accuracy | depth cosine | depth rel RMS | depth RMS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['precision']} | {r['weights']} | {r['rounding']} | "
            f"{r['cosine_semseg']:.5f} | {100 * r['rel_rms_semseg']:.2f} % | "
            f"{100 * r['agreement']:.2f} % | {100 * r['patch_accuracy']:.2f} % | "
            f"{r['cosine_depth']:.5f} | {100 * r['rel_rms_depth']:.2f} % | "
            f"{r['depth_rms']:.2f} |"
        )
    lines += ["", "Measured by `python benchmarks/quant_study.py` (golden executor)."]
    return "\n".join(lines)


def markdown(digits: list[dict], float_acc: float, m3vit: list[dict], images: int) -> str:
    lines = [
        f"Digits ViT (float {100 * float_acc:.2f} % on the 360 test digits):",
        "",
        "| precision | activations | weights | rounding | calibration | accuracy | top-1 "
        "agreement | cosine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in digits:
        lines.append(
            f"| {r['precision']} | {r['quant']} | {r['weights']} | {r['rounding']} | "
            f"{r['calib']} | {100 * r['accuracy']:.2f} % | {100 * r['agreement']:.2f} % | "
            f"{r['cosine']:.6f} |"
        )
    lines += [
        "",
        f"m3vit (seeded weights, {images} images, semseg decisions = argmax per patch, "
        "calibration on 16 Gaussian images like the inputs):",
        "",
        "| precision | activations | weights | rounding | semseg cosine | semseg rel RMS | "
        "semseg agreement | depth cosine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in m3vit:
        lines.append(
            f"| {r['precision']} | {r['quant']} | {r['weights']} | {r['rounding']} | "
            f"{r['cosine_semseg']:.5f} | {100 * r['rel_rms_semseg']:.2f} % | "
            f"{100 * r['agreement']:.2f} % | {r['cosine_depth']:.5f} |"
        )
    lines += ["", "Measured by `python benchmarks/quant_study.py` (golden executor)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m3vit-images", type=int, default=4)
    parser.add_argument("--skip-m3vit", action="store_true")
    parser.add_argument("--scene-images", type=int, default=16)
    parser.add_argument("--scene-calib", type=int, default=32)
    parser.add_argument(
        "--only-scenes", action="store_true", help="only the m3vit trained on digit scenes"
    )
    parser.add_argument(
        "--precisions",
        default=",".join(PRECISIONS),
        help="comma-separated subset (the docs' tables need them all)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"--precisions: {', '.join(unknown)} not among {', '.join(PRECISIONS)}")
    if args.write_docs and set(precisions) != set(PRECISIONS):
        parser.error("--write-docs writes every precision's rows: drop --precisions")
    console = Console(width=160)
    scenes, scene_floats = scene_rows(args.scene_images, args.scene_calib, precisions)
    for r in scenes:
        console.print(
            f"m3vit scenes {r['precision']:8} {r['weights']:7} {r['rounding']:7} "
            f"cosine {r['cosine_semseg']:.5f} agreement {100 * r['agreement']:.2f} % "
            f"patch accuracy {100 * r['patch_accuracy']:.2f} % "
            f"(float {100 * scene_floats['patch_accuracy']:.2f} %)"
        )
    if args.write_docs:
        replace_marked(
            DOCS,
            "quant_study_scenes",
            scene_markdown(scenes, scene_floats, args.scene_images, args.scene_calib),
        )
    if args.only_scenes:
        if args.json:
            args.json.write_text(json.dumps({"scenes": scenes, "scene_float": scene_floats}))
        return 0
    data = load_digits(size=16)
    calibs = {"4 random": 4, "64 digits": data.train.images[:64]}
    digits, float_acc = digits_rows(calibs, precisions)
    m3vit = [] if args.skip_m3vit else m3vit_rows(args.m3vit_images, precisions)
    table = Table("model", "precision", "activations", "weights", "rounding", "calibration",
                  "accuracy", "agreement", "cosine")  # fmt: skip
    for r in digits:
        table.add_row(r["model"], r["precision"], r["quant"], r["weights"], r["rounding"],
                      r["calib"], f"{100 * r['accuracy']:.2f}", f"{100 * r['agreement']:.2f}",
                      f"{r['cosine']:.6f}")  # fmt: skip
    for r in m3vit:
        table.add_row(r["model"], r["precision"], r["quant"], r["weights"], r["rounding"],
                      r["calib"], "-", f"{100 * r['agreement']:.2f}",
                      f"{r['cosine_semseg']:.5f} / {r['cosine_depth']:.5f}")  # fmt: skip
    console.print(f"digits-vit float accuracy {100 * float_acc:.2f} %")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"float_accuracy": float_acc, "digits": digits,
                                         "m3vit": m3vit, "scenes": scenes,
                                         "scene_float": scene_floats}, indent=1))  # fmt: skip
    if args.write_docs:
        replace_marked(DOCS, "quant_study", markdown(digits, float_acc, m3vit, args.m3vit_images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
