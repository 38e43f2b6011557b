"""Small model configs shared by tests (a module, not collected)."""

SMALL_VIT = {
    "name": "vit-small-test",
    "family": "vit",
    "image_size": [32, 32],
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "num_classes": 10,
}
