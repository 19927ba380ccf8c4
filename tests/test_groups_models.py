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
    assert set(NAME_RULES) == {"token", "position embedding", "relative position table"}
