"""param_groups: which tensors decay, checked against decisions written out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adamwkit
from adamwkit import param_groups


class LlamaRMSNorm(nn.Module):
    """A third-party norm class (as in Llama code): matched by its type name."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, n))  # 2-D on purpose: only the type rule catches it

    def forward(self, x):
        return x * self.scale / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(50, 16)
        self.pos_embed = nn.Parameter(torch.zeros(1, 8, 16))
        self.mixer = nn.LayerNorm(16)  # a norm layer under a name no name-rule catches
        self.fc = nn.Linear(16, 32)
        self.bn = nn.BatchNorm1d(32)
        self.rms = LlamaRMSNorm(32)
        self.head = nn.Linear(32, 50, bias=False)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.gate = nn.Parameter(torch.zeros(()))

    def no_weight_decay(self):
        return {"pos_embed"}


EXPECTED_RULES = {
    "tok.weight": "embedding",
    "pos_embed": "model.no_weight_decay()",
    "mixer.weight": "norm layer (LayerNorm)",
    "mixer.bias": "norm layer (LayerNorm)",
    "fc.weight": "ndim >= 2",
    "fc.bias": "bias",
    "bn.weight": "norm layer (BatchNorm1d)",
    "bn.bias": "norm layer (BatchNorm1d)",
    "rms.scale": "norm layer (LlamaRMSNorm)",
    "head.weight": "ndim >= 2",
    "frozen.weight": "frozen (left out)",
    "frozen.bias": "frozen (left out)",
    "gate": "ndim <= 1",
}


def names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_default_rules():
    model = Net()
    groups = param_groups(model, weight_decay=0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert names(model, groups[0]) == {"tok.weight", "fc.weight", "head.weight"}
    assert names(model, groups[1]) == {
        "pos_embed",
        "mixer.weight",
        "mixer.bias",
        "fc.bias",
        "bn.weight",
        "bn.bias",
        "rms.scale",
        "gate",
    }
    assert {e.name: e.rule for e in groups.plan.entries} == EXPECTED_RULES


def test_matches_nanogpt_rule_on_plain_model():
    """With no norms, embeddings or no_weight_decay(), the rule is nanoGPT's: dim >= 2."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Conv1d(4, 2, 3), nn.Linear(2, 1))
    groups = param_groups(model, 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.dim() >= 2}


def test_plan_counts_and_text():
    model = Net()
    plan = param_groups(model, 0.1).plan
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_decay = 50 * 16 + 16 * 32 + 32 * 50
    assert sum(e.numel for e in plan.decayed) == n_decay
    text = str(plan)
    assert f"3 of {len(trainable)} trainable tensors decay" in text
    assert f"{n_decay:,} of {sum(p.numel() for p in trainable):,} parameters" in text
    assert "norm layer (LayerNorm)" in text and "frozen (left out)" in text
    per_tensor = plan.format(per_tensor=True)
    assert "mixer.weight" in per_tensor and "1x32" in per_tensor


def test_options():
    model = Net()
    groups = param_groups(
        model,
        0.1,
        decay_embeddings=False,
        exclude=["head.*"],
        multipliers={"fc.*": 0.5},
    )
    assert [g["weight_decay"] for g in groups] == [pytest.approx(0.05), 0.0]
    assert names(model, groups[0]) == {"fc.weight"}
    rules = {e.name: e.rule for e in groups.plan.entries}
    assert rules["tok.weight"] == "embedding (decay_embeddings=False)"
    assert rules["head.weight"] == "exclude 'head.*'"
    assert rules["fc.weight"] == "ndim >= 2, x0.5 by 'fc.*'"


def test_callable_exclusion_and_tied_weights():
    model = Net()
    model.head.weight = model.tok.weight  # tied: one tensor, listed once
    groups = param_groups(model, 0.1, exclude=[lambda name, p: name.startswith("fc.")])
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids))
    assert names(model, groups[0]) == {"tok.weight"}


def test_tied_weight_answers_to_every_name():
    model = Net()
    model.head.weight = model.tok.weight
    groups = param_groups(model, 0.1, exclude=["head.*"])
    assert id(model.tok.weight) not in {id(p) for p in groups[0]["params"]}
    groups = param_groups(model, 0.1, multipliers={"head.*": 0.5})
    assert groups[0]["weight_decay"] == pytest.approx(0.05)


def test_fused_norm_linear_block_still_decays():
    class LayerNormLinear(nn.Module):  # a fused LayerNorm + Linear, as TransformerEngine has
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4, 4))

    model = nn.Sequential(LayerNormLinear())
    assert names(model, param_groups(model, 0.1)[0]) == {"0.weight"}


def test_exclusion_matching_only_frozen_does_not_warn(recwarn):
    param_groups(Net(), 0.1, exclude=["frozen.*", "fc.*", "fc.weight"])
    assert not [w for w in recwarn if "matched no parameter" in str(w.message)]


def test_groups_work_with_both_optimizers():
    model = Net()
    groups = param_groups(model, 0.1)
    twin = Net()
    twin.load_state_dict(model.state_dict())
    before = model.fc.weight.detach().clone()
    for net, opt in (
        (model, adamwkit.AdamW(groups)),
        (twin, torch.optim.AdamW(param_groups(twin, 0.1))),
    ):
        out = net.head(net.rms(net.bn(net.fc(net.mixer(net.tok(torch.arange(4)))))))
        out.sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(model.fc.weight, before)


def test_unmatched_pattern_warns():
    with pytest.warns(UserWarning, match="'nope.*' matched no parameter"):
        param_groups(Net(), 0.1, exclude=["nope.*"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weight_decay": -1.0}, "weight_decay=-1.0 is invalid"),
        ({"multipliers": {"fc.*": -2}}, r"multipliers\['fc.\*'\]=-2 is invalid"),
        ({"exclude": [3]}, "exclude entry 3 is invalid"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        param_groups(Net(), **kwargs)


def test_bad_model():
    with pytest.raises(ValueError, match="model=list is invalid"):
        param_groups([nn.Linear(2, 2)])
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(frozen)
