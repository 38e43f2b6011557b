"""Tests of the torch reference models and their registry (fast: tiny inputs, batch 2)."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import nn

from codesign.models import (
    M3ViT,
    ModelConfig,
    MoEMlp,
    VisionTransformer,
    WeightsError,
    config_from_dict,
    count_macs,
    count_params,
    create_model,
    get_config,
    list_models,
    load_config,
    select_top_k,
    tokens_to_map,
)
from codesign.models.timm_support import import_timm

REGISTERED = ["deit-small", "m3vit", "m3vit-tiny", "vit-tiny"]


def images_for(config: ModelConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.in_chans, *config.image_size, generator=generator)


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """These tensors are small: extra intra-op threads only add sync cost, and on a shared
    2-core machine spinning threads make the module several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
    registered_model.cache_clear()


@functools.cache
def registered_model(name: str) -> nn.Module:
    """One seed-0 instance per registered model for the whole module (init is the slow part).

    Tests that use it must not change its weights.
    """
    return create_model(name)


@pytest.fixture
def vit_tiny() -> VisionTransformer:
    return registered_model("vit-tiny")


@pytest.fixture
def m3vit_tiny() -> M3ViT:
    return registered_model("m3vit-tiny")


# --- registry and configs -------------------------------------------------------------


def test_registered_models() -> None:
    names = list_models()
    assert names == sorted(names)
    assert set(REGISTERED) <= set(names)


def test_config_fields_and_derived_sizes() -> None:
    config = get_config("m3vit")
    assert config.image_size == (128, 256)
    assert (config.embed_dim, config.depth, config.num_heads) == (192, 12, 3)
    assert (config.moe.num_experts, config.moe.top_k, config.moe.expert_hidden) == (16, 2, 384)
    assert config.task_names == ("semseg", "depth")
    assert config.task_channels == (19, 1)
    assert (config.grid_size, config.patches, config.tokens) == ((8, 16), 128, 129)
    assert config.mlp_hidden == 768
    tiny = get_config("m3vit-tiny")
    assert (tiny.image_size, tiny.embed_dim, tiny.depth, tiny.num_heads) == ((32, 64), 64, 4, 2)
    assert (tiny.moe.num_experts, tiny.moe.top_k, tiny.moe.expert_hidden) == (4, 2, 128)
    assert tiny.tokens == 9
    deit = get_config("deit-small")
    assert (deit.embed_dim, deit.num_heads, deit.num_classes, deit.tokens) == (384, 6, 1000, 197)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.depth = 3


@pytest.mark.parametrize("name", REGISTERED)
def test_config_as_dict_round_trips(name: str) -> None:
    config = get_config(name)
    assert config_from_dict(config.as_dict()) == config


def test_unknown_model_lists_registered() -> None:
    with pytest.raises(ValueError, match="unknown model 'vit-huge'") as info:
        get_config("vit-huge")
    for name in REGISTERED:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="registered models: deit-small, ") as info:
        create_model("nope")
    for name in REGISTERED:
        assert name in str(info.value)


def write_config(tmp_path, text: str):
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return path


BASE_YAML = """\
name: custom
family: vit
image_size: [32, 32]
patch_size: 16
embed_dim: 32
depth: 2
num_heads: 2
num_classes: 10
"""


def test_custom_yaml_builds(tmp_path) -> None:
    model = create_model(write_config(tmp_path, BASE_YAML))
    assert isinstance(model, VisionTransformer)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("colour: red\n", "unknown key 'colour'"),
        ("patch_size: 0\n", "patch_size: expected a positive integer, got 0"),
        ("num_heads: 3\n", "num_heads: embed_dim 32 is not divisible by 3"),
        ("patch_size: 5\n", "image_size: \\[32, 32\\] is not a multiple of patch_size 5"),
        ("family: cnn\n", "family: expected one of"),
        ("mlp_ratio: fast\n", "mlp_ratio: expected a positive number"),
        ("moe: {num_experts: 4, top_k: 2, expert_hidden: 8}\n", "moe: only allowed"),
    ],
)
def test_bad_yaml_values_name_file_and_key(tmp_path, change: str, message: str) -> None:
    key = change.split(":")[0]
    lines = [line for line in BASE_YAML.splitlines() if not line.startswith(key + ":")]
    path = write_config(tmp_path, "\n".join(lines) + "\n" + change)
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE_YAML.replace("depth: 2\n", ""), "missing key 'depth'"),
        (
            BASE_YAML.replace("family: vit", "family: m3vit").replace("num_classes: 10\n", ""),
            "moe: required",
        ),
        (
            BASE_YAML.replace("family: vit", "family: m3vit").replace("num_classes: 10\n", "")
            + "moe: {num_experts: 2, top_k: 3, expert_hidden: 8}\n"
            + "tasks: [{name: a, channels: 1}]\n",
            "moe.top_k: 3 exceeds num_experts 2",
        ),
        (
            BASE_YAML.replace("family: vit", "family: m3vit").replace("num_classes: 10\n", "")
            + "moe: {num_experts: 2, top_k: 1, expert_hidden: 8, shared: 1}\n",
            "moe: unknown key 'shared'",
        ),
        (
            BASE_YAML.replace("family: vit", "family: m3vit").replace("num_classes: 10\n", "")
            + "moe: {num_experts: 2, top_k: 1, expert_hidden: 8}\n"
            + "tasks: [{name: a, channels: 0}]\n",
            "tasks\\[0\\].channels: expected a positive integer",
        ),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml_structure(tmp_path, text: str, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


# --- ViT: timm layout -----------------------------------------------------------------

BLOCK_KEYS = [
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
]


def expected_timm_keys(depth: int) -> list[str]:
    """timm VisionTransformer state-dict names (class token, no reg tokens, token pool)."""
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for index in range(depth):
        keys += [f"blocks.{index}.{key}" for key in BLOCK_KEYS]
    return [*keys, "norm.weight", "norm.bias", "head.weight", "head.bias"]


def test_vit_tiny_state_dict_names_match_timm(vit_tiny: VisionTransformer) -> None:
    state = vit_tiny.state_dict()
    assert list(state) == expected_timm_keys(12)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert shapes["cls_token"] == (1, 1, 192)
    assert shapes["pos_embed"] == (1, 197, 192)
    assert shapes["patch_embed.proj.weight"] == (192, 3, 16, 16)
    assert shapes["blocks.0.attn.qkv.weight"] == (576, 192)
    assert shapes["blocks.11.mlp.fc1.weight"] == (768, 192)
    assert shapes["blocks.11.mlp.fc2.weight"] == (192, 768)
    assert shapes["head.weight"] == (1000, 192)


def test_vit_timm_attributes(vit_tiny: VisionTransformer) -> None:
    assert vit_tiny.global_pool == "token"
    assert vit_tiny.num_prefix_tokens == 1
    assert (vit_tiny.embed_dim, vit_tiny.num_classes) == (192, 1000)
    patch_embed = vit_tiny.patch_embed
    assert (patch_embed.img_size, patch_embed.patch_size) == ((224, 224), (16, 16))
    assert patch_embed.grid_size == (14, 14)
    assert patch_embed.proj.stride == patch_embed.proj.kernel_size == (16, 16)
    for name in ("norm_pre", "fc_norm"):
        assert isinstance(getattr(vit_tiny, name), nn.Identity)
    block = vit_tiny.blocks[0]
    for name in ("ls1", "ls2", "drop_path1", "drop_path2"):
        assert isinstance(getattr(block, name), nn.Identity)
    attn = block.attn
    assert (attn.num_heads, attn.head_dim, attn.scale) == (3, 64, 64**-0.5)
    assert isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)
    assert isinstance(block.mlp.act, nn.GELU) and block.mlp.act.approximate == "none"
    assert block.norm1.eps == block.norm2.eps == vit_tiny.norm.eps == 1e-6


def reference_vit_forward(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """The ViT written out with functional ops, to pin the block order and the CLS head."""
    config = model.config
    patches = nn.functional.conv2d(
        images, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=16
    )
    x = torch.cat(
        [model.cls_token.expand(len(images), -1, -1), patches.flatten(2).transpose(1, 2)], 1
    )
    x = x + model.pos_embed
    heads, head_dim = config.num_heads, config.head_dim
    for block in model.blocks:
        normed = nn.functional.layer_norm(
            x, (config.embed_dim,), block.norm1.weight, block.norm1.bias, 1e-6
        )
        q, k, v = block.attn.qkv(normed).split(config.embed_dim, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, head_dim)).transpose(1, 2) for t in (q, k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / head_dim**0.5, dim=-1) @ v
        x = x + block.attn.proj(attn.transpose(1, 2).flatten(2))
        normed = nn.functional.layer_norm(
            x, (config.embed_dim,), block.norm2.weight, block.norm2.bias, 1e-6
        )
        hidden = nn.functional.gelu(block.mlp.fc1(normed))
        x = x + block.mlp.fc2(hidden)
    x = nn.functional.layer_norm(x, (config.embed_dim,), model.norm.weight, model.norm.bias, 1e-6)
    return model.head(x[:, 0])


def test_vit_matches_functional_reference(vit_tiny: VisionTransformer) -> None:
    images = images_for(vit_tiny.config)
    with torch.no_grad():
        torch.testing.assert_close(
            vit_tiny(images), reference_vit_forward(vit_tiny, images), rtol=1e-5, atol=1e-5
        )


# --- init -----------------------------------------------------------------------------


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone() -> None:
    rng_before = torch.get_rng_state()
    first = create_model("m3vit-tiny", seed=3).state_dict()
    second = create_model("m3vit-tiny", seed=3).state_dict()
    other = create_model("m3vit-tiny", seed=4).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert list(first) == list(second)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(
        first["blocks.1.mlp.gates.0.weight"], other["blocks.1.mlp.gates.0.weight"]
    )


def test_init_statistics(m3vit_tiny: M3ViT) -> None:
    state = m3vit_tiny.state_dict()
    assert abs(state["blocks.0.norm1.weight"].mean() - 1) < 0.05
    assert 0.05 < state["blocks.0.norm1.weight"].std() < 0.15  # 1 + 0.1·N(0,1)
    assert 0.01 < state["blocks.0.attn.qkv.bias"].std() < 0.03  # 0.02·N(0,1)
    qkv = state["blocks.0.attn.qkv.weight"]
    assert qkv.abs().max() <= 0.04 + 1e-7 and 0.015 < qkv.std() < 0.02  # trunc normal ±2σ
    gate = state["blocks.1.mlp.gates.0.weight"]
    assert 0.8 / 64**0.5 < gate.std() < 1.2 / 64**0.5


def test_default_routing_is_not_degenerate() -> None:
    model = registered_model("m3vit")
    with torch.no_grad():
        model(images_for(model.config), 0)
    for layer in model.moe_layers:
        used = torch.unique(layer.last_topk_indices).numel()
        assert used >= 12, f"only {used} of 16 experts used"
        assert layer.last_topk_probs[..., 0].mean() < 0.5


# --- forward shapes -------------------------------------------------------------------


@pytest.mark.parametrize("name", REGISTERED)
def test_forward_shapes(name: str) -> None:
    model = registered_model(name)
    config = model.config
    images = images_for(config)
    with torch.no_grad():
        if config.family == "vit":
            assert model(images).shape == (2, config.num_classes)
            assert model.forward_features(images).shape == (2, config.tokens, config.embed_dim)
        else:
            assert model.forward_features(images, 0).shape == (2, config.tokens, config.embed_dim)
            for task, channels in enumerate(config.task_channels):
                out = model(images, task)
                assert out.shape == (2, config.patches, channels)
                grid = tokens_to_map(out, model.patch_embed.grid_size)
                assert grid.shape == (2, channels, *config.grid_size)
                # row-major patch order: token r·gw + c lands at (r, c)
                torch.testing.assert_close(grid[:, :, 1, 2], out[:, config.grid_size[1] + 2])
    assert not model.training


def test_wrong_image_size_is_a_clear_error(vit_tiny: VisionTransformer) -> None:
    with pytest.raises(
        ValueError, match=r"expected images \[B, 3, 224, 224\], got \[1, 3, 32, 32\]"
    ):
        vit_tiny(torch.zeros(1, 3, 32, 32))


# --- M3ViT ------------------------------------------------------------------------------


def test_m3vit_structure(m3vit_tiny: M3ViT) -> None:
    kinds = [type(block.mlp).__name__ for block in m3vit_tiny.blocks]
    assert kinds == ["Mlp", "MoEMlp", "Mlp", "MoEMlp"]
    moe = m3vit_tiny.blocks[1].mlp
    assert (moe.num_experts, moe.top_k, len(moe.experts), len(moe.gates)) == (4, 2, 4, 2)
    assert moe.experts[0].fc1.out_features == 128
    assert m3vit_tiny.blocks[0].mlp.fc1.out_features == 256
    assert moe.gates[1].bias is None and moe.gates[1].weight.shape == (4, 64)
    assert m3vit_tiny.task_names == ("semseg", "depth")
    assert m3vit_tiny.task_channels == (19, 1)
    assert m3vit_tiny.patch_embed.grid_size == (2, 4)
    assert "blocks.3.mlp.experts.2.fc2.weight" in m3vit_tiny.state_dict()
    assert "heads.1.weight" in m3vit_tiny.state_dict()


def test_m3vit_task_switch_changes_output(m3vit_tiny: M3ViT) -> None:
    images = images_for(m3vit_tiny.config)
    with torch.no_grad():
        features = [m3vit_tiny.forward_features(images, task) for task in (0, 1)]
        routes = [m3vit_tiny.moe_layers[0].last_topk_indices]
        m3vit_tiny.forward_features(images, 0)
        routes.insert(0, m3vit_tiny.moe_layers[0].last_topk_indices)
        depth = m3vit_tiny(images, "depth")
        semseg = m3vit_tiny(images, 0)
    assert not torch.allclose(features[0], features[1])
    assert not torch.equal(routes[0], routes[1])  # the task selects the gate
    assert (semseg.shape[-1], depth.shape[-1]) == (19, 1)
    with pytest.raises(ValueError, match=r"task 2 out of range 0\.\.1"):
        m3vit_tiny(images, 2)
    with pytest.raises(ValueError, match="unknown task 'normals'"):
        m3vit_tiny(images, "normals")


def hand_moe(layer: MoEMlp, x: torch.Tensor, task: int) -> torch.Tensor:
    """Token by token: softmax gate, top-k by (−p, index), Σ p·expert(x), no renormalising."""
    out = torch.zeros_like(x)
    gate = layer.gates[task].weight
    for token in range(x.shape[0]):
        probs = torch.softmax(gate @ x[token], dim=0).tolist()
        chosen = sorted(range(len(probs)), key=lambda e: (-probs[e], e))[: layer.top_k]
        for expert in chosen:
            out[token] += probs[expert] * layer.experts[expert](x[token])
    return out


def test_moe_top_k_is_not_renormalised(m3vit_tiny: M3ViT) -> None:
    block = m3vit_tiny.blocks[1]
    layer = block.mlp
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 9, 64, generator=generator)
    with torch.no_grad():
        for task in (0, 1):
            normed = block.norm2(x)
            got = layer(normed, task)
            want = hand_moe(layer, normed.reshape(-1, 64), task).reshape(2, 9, 64)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            kept = layer.last_topk_probs.sum(-1)
            assert (kept < 0.999).all(), "top-k probabilities must not be renormalised"
            torch.testing.assert_close(
                layer.last_topk_probs, layer.last_gate_probs.gather(-1, layer.last_topk_indices)
            )
        # The whole block feeds the LN2 output to both the gate and the experts.
        after_attn = x + block.attn(block.norm1(x))
        moe_out = hand_moe(layer, block.norm2(after_attn).reshape(-1, 64), 1)
        want_block = after_attn + moe_out.reshape(2, 9, 64)
        torch.testing.assert_close(block(x, 1), want_block, rtol=1e-5, atol=1e-6)


def test_top_k_tie_break_prefers_lower_expert_index() -> None:
    probs = torch.tensor([[0.2, 0.3, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.2, 0.5]])
    indices, top = select_top_k(probs, 2)
    assert indices.tolist() == [[1, 2], [0, 1], [3, 1]]
    torch.testing.assert_close(top, torch.tensor([[0.3, 0.3], [0.25, 0.25], [0.5, 0.2]]))
    layer = MoEMlp(dim=8, expert_hidden=4, num_experts=4, top_k=2, num_tasks=1)
    with torch.no_grad():
        layer.gates[0].weight.zero_()  # every expert equally likely for every token
        layer(torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0)), 0)
    assert (layer.last_topk_indices == torch.tensor([0, 1])).all()
    torch.testing.assert_close(layer.last_topk_probs, torch.full((3, 5, 2), 0.25))


# --- weights ----------------------------------------------------------------------------


def test_weights_round_trip(tmp_path, m3vit_tiny: M3ViT) -> None:
    state = m3vit_tiny.state_dict()
    images = images_for(m3vit_tiny.config)
    with torch.no_grad():
        want = m3vit_tiny(images, 1)
    for index, payload in enumerate([state, {"model": state}, {"state_dict": state, "epoch": 3}]):
        path = tmp_path / f"weights{index}.pt"
        torch.save(payload, path)
        loaded = create_model("m3vit-tiny", seed=99, weights=path)
        assert all(torch.equal(loaded.state_dict()[key], state[key]) for key in state)
        with torch.no_grad():
            torch.testing.assert_close(loaded(images, 1), want, rtol=0, atol=0)
    assert not loaded.training


def saved(tmp_path, state) -> str:
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    return str(path)


def test_weights_errors(tmp_path) -> None:
    state = registered_model("m3vit-tiny").state_dict()
    assert issubclass(WeightsError, ValueError)

    missing = {key: value for key, value in state.items() if key != "heads.1.bias"}
    with pytest.raises(WeightsError, match=r"missing key: heads\.1\.bias") as info:
        create_model("m3vit-tiny", weights=saved(tmp_path, missing))
    assert "bad.pt" in str(info.value) and "m3vit-tiny" in str(info.value)

    extra = {**state, "blocks.0.mlp.gates.0.weight": torch.zeros(4, 64)}
    with pytest.raises(WeightsError, match=r"unexpected key: blocks\.0\.mlp\.gates\.0\.weight"):
        create_model("m3vit-tiny", weights=saved(tmp_path, extra))

    vit_state = dict(registered_model("vit-tiny").state_dict())
    vit_state["blocks.0.attn.qkv.weight"] = vit_state["blocks.0.attn.qkv.weight"].t()
    with pytest.raises(WeightsError) as info:
        create_model("vit-tiny", weights=saved(tmp_path, vit_state))
    assert "blocks.0.attn.qkv.weight: file has (192, 576), model expects (576, 192)" in str(
        info.value
    )

    with pytest.raises(WeightsError, match=r"weights file not found: .*nothing\.pt"):
        create_model("m3vit-tiny", weights=tmp_path / "nothing.pt")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"garbage\.pt: not a torch state dict \(it is a text"):
        create_model("m3vit-tiny", weights=garbage)


# --- MACs and parameters ----------------------------------------------------------------


def test_vit_tiny_macs_and_params(vit_tiny: VisionTransformer) -> None:
    tokens, patches, dim, hidden, classes = 197, 196, 192, 768, 1000
    block = tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim
    block += 2 * tokens * dim * hidden
    want = patches * dim * 3 * 16 * 16 + 12 * block + dim * classes
    assert count_macs(vit_tiny) == count_macs("vit-tiny") == want
    assert 1.25e9 < want < 1.26e9  # timm's vit_tiny_patch16_224: ≈1.26 GMAC
    block_params = 4 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim)
    block_params += (dim * hidden + hidden) + (hidden * dim + dim)
    want_params = (3 * 256 * dim + dim) + dim + tokens * dim + 12 * block_params + 2 * dim
    want_params += dim * classes + classes
    assert count_params(vit_tiny) == count_params(get_config("vit-tiny")) == want_params
    assert want_params == 5_717_416  # timm reports 5.7 M


def test_m3vit_macs() -> None:
    tokens, patches, dim, hidden, experts, top_k, expert_hidden = 129, 128, 192, 768, 16, 2, 384
    attention = tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim
    dense = attention + 2 * tokens * dim * hidden
    moe = attention + tokens * dim * experts + tokens * top_k * 2 * dim * expert_hidden
    embed = patches * dim * 3 * 16 * 16
    assert count_macs("m3vit") == embed + 6 * dense + 6 * moe + patches * dim * 19
    assert count_macs("m3vit", task=1) == embed + 6 * dense + 6 * moe + patches * dim * 1
    tiny = get_config("m3vit-tiny")
    assert count_macs(create_model(tiny)) == count_macs(tiny)


# --- timm compatibility (optional) ------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("vit-tiny", "vit_tiny_patch16_224"), ("deit-small", "deit_small_patch16_224")],
)
def test_timm_state_dicts_load_both_ways(ours: str, theirs: str) -> None:
    timm, reason = import_timm()
    if timm is None:
        pytest.skip(reason)
    timm_model = timm.create_model(theirs, pretrained=False).eval()
    model = create_model(ours, seed=7)
    ours_state = {key: value.clone() for key, value in model.state_dict().items()}
    timm_state = timm_model.state_dict()
    assert {k: v.shape for k, v in timm_state.items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    for name in ("global_pool", "num_prefix_tokens", "embed_dim", "num_classes"):
        assert getattr(model, name) == getattr(timm_model, name)
    assert model.patch_embed.grid_size == timm_model.patch_embed.grid_size
    assert model.blocks[0].attn.scale == timm_model.blocks[0].attn.scale
    images = images_for(model.config)
    # timm's weights into ours, and ours (with perturbed norms/biases) into timm.
    model.load_state_dict(timm_state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(images), timm_model(images), rtol=1e-4, atol=1e-5)
    timm_model.load_state_dict(ours_state, strict=True)
    model.load_state_dict(ours_state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(images), timm_model(images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            model.forward_features(images),
            timm_model.forward_features(images),
            rtol=1e-4,
            atol=1e-5,
        )
