"""Train m3vit on digit scenes (or fetch it from the cache) and hand it to a build.

    python benchmarks/train_m3vit_scenes.py                      # ~7 min on 2 cores, once
    python benchmarks/train_m3vit_scenes.py --out m3vit-scenes.pt --calib-out scenes.npy \\
        --test-out test.npy
    codesign build --model m3vit --board zcu102 --precision w8a8r16 \\
        --weights m3vit-scenes.pt --calib scenes.npy --images test.npy

The checkpoint is the one the quantisation study measures (`codesign.train.scene_checkpoint`:
seeded, float16, cached under the user's cache folder, keyed by its settings and the torch
version); the scenes are `codesign.datasets.load_digit_scenes`. Prints the float model's
patch accuracy and depth RMS on the test scenes (``--json`` for a file).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from codesign.models import create_model
from codesign.train import scene_checkpoint, scene_metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m3vit", help="an m3vit-family model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=1536, help="training scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="copy the checkpoint here (for --weights)")
    parser.add_argument("--calib-out", type=Path, help="write training scenes here (.npy)")
    parser.add_argument("--calib-count", type=int, default=32)
    parser.add_argument("--test-out", type=Path, help="write test scenes here (.npy)")
    parser.add_argument("--test-count", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    path, data = scene_checkpoint(
        args.model, epochs=args.epochs, scenes=args.scenes, seed=args.seed, progress=True
    )
    seconds = time.perf_counter() - started
    model = create_model(args.model, weights=path)
    with torch.no_grad():
        images = torch.as_tensor(data.test.images)
        outputs = [model(images, task).numpy() for task in (0, 1)]
    result = {
        "model": args.model,
        "checkpoint": path.name,
        "test_scenes": len(data.test),
        **scene_metrics(*outputs, data.test.labels),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        shutil.copyfile(path, args.out)
        print(f"wrote {args.out}")
    if args.calib_out:
        np.save(args.calib_out, data.train.images[: args.calib_count])
        print(f"wrote {args.calib_out} ({min(args.calib_count, len(data.train))} scenes)")
    if args.test_out:
        np.save(args.test_out, data.test.images[: args.test_count])
        print(f"wrote {args.test_out} ({min(args.test_count, len(data.test))} scenes)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
