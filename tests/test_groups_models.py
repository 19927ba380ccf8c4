"""param_groups on real architectures built from configs, and through wrappers.

The expected decisions are those of the recipes: DeiT/timm exclude class tokens and
absolute position embeddings (timm's ``no_weight_decay()`` lists them), Swin excludes its
relative position bias tables, and GPT-2's output layer is the token embedding (tied).
Skipped without transformers (and PEFT for the LoRA test): ``pip install -e '.[dev]'``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adamwkit import param_groups
from adamwkit.groups import NAME_RULES

transformers = pytest.importorskip("transformers")


def rules(model: nn.Module, **kw) -> dict[str, str]:
    return {e.name: e.rule for e in param_groups(model, 0.05, **kw).plan.entries}


def hf_vit() -> nn.Module:
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, image_size=32, patch_size=8)  # fmt: skip
    return transformers.ViTModel(cfg, use_mask_token=True)


def test_hf_vit_tokens_and_positions_do_not_decay():
    r = rules(hf_vit())
    assert r["embeddings.cls_token"] == "token (cls_token)"
    assert r["embeddings.mask_token"] == "token (mask_token)"
    assert r["embeddings.position_embeddings"] == "position embedding (position_embeddings)"
    assert r["embeddings.patch_embeddings.projection.weight"] == "ndim >= 2"
    # each name rule can be turned off: the tensors then decay as matrices
    off = rules(hf_vit(), name_rules=("token",))
    assert off["embeddings.position_embeddings"] == "ndim >= 2"
    assert off["embeddings.cls_token"] == "token (cls_token)"


def test_hf_swin_relative_position_tables_do_not_decay():
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                  num_heads=[2, 2], window_size=4)  # fmt: skip
    r = rules(transformers.SwinModel(cfg))
    tables = [n for n in r if n.endswith("relative_position_bias_table")]
    assert len(tables) == 2
    assert {r[n] for n in tables} == {"relative position table (relative_position_bias_table)"}


def test_gpt2_tied_head_is_shown_with_the_embedding():
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, n_positions=16)
    plan = param_groups(transformers.GPT2LMHeadModel(cfg), 0.05).plan
    wte = next(e for e in plan.entries if e.name == "transformer.wte.weight")
    assert wte.aliases == ("lm_head.weight",) and wte.decays
    assert "tied: transformer.wte.weight = lm_head.weight" in str(plan)
    assert "transformer.wte.weight (= lm_head.weight)" in plan.format(per_tensor=True)
    # position embedding as an nn.Embedding is an embedding (nanoGPT and HF decay it)
    assert {e.name: e.rule for e in plan.entries}["transformer.wpe.weight"] == "embedding"


class TimmLikeViT(nn.Module):
    """timm's layout: bare pos_embed and cls_token, listed by no_weight_decay()."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.scale = nn.Parameter(torch.ones(1, 8))  # 2-D, excluded only by no_weight_decay
        self.proj = nn.Linear(8, 8)

    def no_weight_decay(self):
        return {"pos_embed", "cls_token", "scale"}

    def forward(self, x):
        return self.proj(x * self.scale)


@pytest.mark.parametrize("wrap", ["DataParallel", "compile", "DDP"])
def test_no_weight_decay_is_found_through_wrappers(wrap, tmp_path):
    model = TimmLikeViT()
    if wrap == "DataParallel":
        wrapped, prefix = nn.DataParallel(model), "module."
    elif wrap == "compile":
        wrapped, prefix = torch.compile(model), "_orig_mod."
    else:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                                world_size=1)  # fmt: skip
        wrapped, prefix = nn.parallel.DistributedDataParallel(model), "module."
    try:
        r = rules(wrapped)
    finally:
        if wrap == "DDP":
            torch.distributed.destroy_process_group()
    name = type(wrapped).__name__
    assert r[prefix + "scale"] == f"model.no_weight_decay() (through {name})"
    assert r[prefix + "proj.weight"] == "ndim >= 2"


def test_lora_adapters_decay_and_the_frozen_base_is_left_out():
    peft = pytest.importorskip("peft")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, n_positions=16)
    model = peft.get_peft_model(transformers.GPT2LMHeadModel(cfg),
                                peft.LoraConfig(r=4, target_modules=["c_attn"]))  # fmt: skip
    groups = param_groups(model, 0.05, multipliers={"*lora_B*": 2.0})
    plan = groups.plan
    lora = [e for e in plan.entries if "lora_" in e.name]
    assert len(lora) == 2 and all(e.decays and "LoRA adapter" in e.rule for e in lora)
    assert {e.weight_decay for e in lora} == {0.05, 0.1}
    assert len(plan.decayed) == 2  # the base model is frozen: only the adapters train
    assert all(e.weight_decay is None for e in plan.entries if "lora_" not in e.name)


def test_bad_name_rule():
    with pytest.raises(ValueError, match="name_rules entry 'tokens' is invalid"):
        param_groups(nn.Linear(2, 2), name_rules=["tokens"])
    assert set(NAME_RULES) == {"token", "position embedding", "relative position table",
                               "state-space", "learned query"}  # fmt: skip
    bare = nn.Module()
    bare.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
    bare.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
    r = rules(bare, name_rules="token")  # a string is one rule's name
    assert r == {"cls_token": "token (cls_token)", "pos_embed": "ndim >= 2"}


def test_normalized_layers_needs_a_module():
    from adamwkit.groups import normalized_layers

    with pytest.raises(ValueError, match="model=dict is invalid"):
        normalized_layers({}, torch.zeros(1))


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)  # -> BatchNorm: normalised
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 16)  # -> GELU -> out: not normalised
        self.q = nn.Linear(16, 16)  # -> view -> LayerNorm (a QK-norm): normalised
        self.q_norm = nn.LayerNorm(4)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        h = self.bn(self.conv(x)).mean((2, 3))
        h = torch.nn.functional.gelu(self.fc(h))
        q = self.q_norm(self.q(h).view(-1, 4, 4)).flatten(1)
        return self.out(q)


def test_normalized_layers_follow_outputs_into_norms():
    from adamwkit.groups import normalized_layers

    assert normalized_layers(ConvBN(), torch.randn(2, 3, 6, 6)) == ["conv.weight", "q.weight"]


def test_qwen3_query_and_key_projections_are_normalized():
    from adamwkit.groups import normalized_layers

    cfg = transformers.Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                   vocab_size=100)  # fmt: skip
    found = normalized_layers(transformers.Qwen3ForCausalLM(cfg), torch.randint(0, 100, (1, 8)))
    assert found == ["model.layers.0.self_attn.q_proj.weight",
                     "model.layers.0.self_attn.k_proj.weight"]  # fmt: skip


def test_corrected_decay_on_the_normalised_layers_only():
    """Groups with decay_scale='corrected' for the normalised layers: each tensor takes the
    steps of an AdamW run with its own convention (the oracle: two separate optimizers)."""
    import adamwkit
    from adamwkit.groups import normalized_layers

    torch.manual_seed(0)
    model = ConvBN()
    x = torch.randn(4, 3, 6, 6)
    scales = dict.fromkeys(normalized_layers(model, x), "corrected")
    groups = adamwkit.param_groups(model, 0.5, decay_scales=scales)
    assert sorted(g.get("decay_scale", "-") for g in groups) == ["-", "-", "corrected"]
    rows = {e.name: e.rule for e in groups.plan.entries}
    assert rows["conv.weight"] == "ndim >= 2, decay_scale 'corrected' by 'conv.weight'"
    twin = ConvBN()
    twin.load_state_dict(model.state_dict())
    corrected = [p for n, p in twin.named_parameters() if n in scales]
    ids = {id(p) for p in corrected}
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in ids]}
            for g in adamwkit.param_groups(twin, 0.5)]  # fmt: skip
    opts = [adamwkit.AdamW(groups, lr=1e-2),
            adamwkit.AdamW(corrected, lr=1e-2, weight_decay=0.5, decay_scale="corrected"),
            adamwkit.AdamW(rest, lr=1e-2)]  # fmt: skip
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 - t / 20) for o in opts]
    for _ in range(10):
        for m, os_ in ((model, opts[:1]), (twin, opts[1:])):
            for o in os_:
                o.zero_grad()
            m(x).pow(2).mean().backward()
            for o in os_:
                o.step()
        for s in scheds:
            s.step()
    for (n, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=n)
    with pytest.raises(ValueError, match="decay_scales\\['\\*'\\]"):
        adamwkit.param_groups(model, 0.5, decay_scales={"*": "adamc"})


def test_timm_vit_and_swin_when_timm_is_installed():
    """timm's own models (skipped without timm: it needs torchvision, see the README)."""
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    r = rules(vit)
    assert r["cls_token"] == r["pos_embed"] == "model.no_weight_decay()"
    assert r["patch_embed.proj.weight"] == "ndim >= 2"
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10)
    tables = {n: rule for n, rule in rules(swin).items() if n.endswith("bias_table")}
    assert tables and all("relative_position_bias_table" in v or "no_weight_decay" in v
                          for v in tables.values())  # fmt: skip


class TokenBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)  # on (B, T, 8): its output is a view; then transpose -> BN
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.bn(self.fc(x).transpose(1, 2))


def test_normalized_layers_through_a_view_output_and_keeps_the_buffers():
    from adamwkit.groups import normalized_layers

    model = TokenBN()
    before = {n: b.clone() for n, b in model.named_buffers()}
    assert normalized_layers(model, torch.randn(2, 5, 8)) == ["fc.weight"]
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, before[n], rtol=0, atol=0)
