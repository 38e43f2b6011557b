"""Train the registered ``digits-vit`` on scikit-learn's digits and store models/digits-vit.pt.

    python benchmarks/train_digits_vit.py            # 100 epochs, seed 0 (~3-5 min, 1 core)
    python benchmarks/train_digits_vit.py --check    # retrain and compare with the stored file

Reproducible: seeded init, data split, order and augmentation; single-threaded torch.
The checkpoint is stored in float16 (about 1 MB); the accuracy printed is that of the
float16 weights (they are rounded before evaluation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from codesign.models import MODELS_DIR
from codesign.train import accuracy, train_digits_vit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=MODELS_DIR / "digits-vit.pt")
    parser.add_argument("--check", action="store_true", help="do not write; compare instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    model, data = train_digits_vit(epochs=args.epochs, seed=args.seed, lr=args.lr, progress=True)
    seconds = time.perf_counter() - started
    train_acc = accuracy(model, data.train.images, data.train.labels)
    test_acc = accuracy(model, data.test.images, data.test.labels)
    result = {
        "epochs": args.epochs,
        "seed": args.seed,
        "lr": args.lr,
        "train_accuracy": round(train_acc, 4),
        "test_accuracy": round(test_acc, 4),
        "train_images": len(data.train),
        "test_images": len(data.test),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(result, indent=1))
    state = {key: value.half() for key, value in model.state_dict().items()}
    if args.check:
        stored = torch.load(args.out, map_location="cpu", weights_only=True)
        same = all(torch.equal(stored[k], state[k]) for k in state)
        print(f"identical to {args.out}: {same}")
        return
    torch.save(state, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
