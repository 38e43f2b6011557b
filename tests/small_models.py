"""Small model configs shared by tests (a module, not collected)."""

from codesign.arch import ArchConfig

# The whole accelerator on m3vit-tiny (9 tokens, dim 64, MLP 256, 4 experts, 2 heads,
# 768-wide patches): a square 8x8 tile on a 128-bit bus (To = 8 > 4 words per beat) and
# buffers just as deep as the model needs. Every test that runs m3vit-tiny on the
# Verilated RTL uses it, so they share one small Verilated model (built once, cached).
ARCH_TINY = ArchConfig(
    tile_in=8,
    tile_out=8,
    attn_parallel=4,
    bus_bits=128,
    max_tokens=16,
    max_dim=64,
    max_hidden=256,
    max_in_dim=768,
    max_experts=4,
    max_heads=2,
)

# m3vit-tiny's buffers: a user's ArchConfig object is checked against the board as given,
# and the defaults' buffers (256 tokens x 1,024 features) would not fit the tests' designs
TINY_BUFFERS = {
    name: getattr(ARCH_TINY, name)
    for name in ("max_tokens", "max_dim", "max_hidden", "max_in_dim", "max_experts", "max_heads")
}

# The smallest whole accelerator that has every unit: the whole-top synthesis test, the
# resource model's tests and the calibration's "small" run use it.
ARCH_SYNTH = ArchConfig(
    tile_in=4,
    tile_out=4,
    attn_parallel=1,
    attn_lanes=8,
    bus_bits=64,
    max_tokens=16,
    max_dim=32,
    max_hidden=64,
    max_in_dim=64,
    max_experts=2,
    max_heads=1,
)

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
