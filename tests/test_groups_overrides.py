"""param_groups' per-glob overrides (``weight_decay={glob: value}`` / ``overrides=``) and the
state-space / learned-query rules, checked against tables written out by hand and against a
real ``torch.optim.AdamW`` step."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

from adamwkit import param_groups


class Mixer(nn.Module):
    """A Mamba-like block: A_log is 2-D (Mamba-1), so only a name rule keeps it out."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj = nn.Linear(8, 16)
        self.A_log = nn.Parameter(torch.zeros(16, 4))
        self.D = nn.Parameter(torch.ones(16))
        self.dt_bias = nn.Parameter(torch.zeros(16))
        self.norm = nn.LayerNorm(16)
        self.out_proj = nn.Linear(16, 8, bias=False)


class LM(nn.Module):
    """An embedding tied to the head, a learned-query block, a mixer and a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(20, 8)
        self.latents = nn.Parameter(torch.zeros(4, 8))
        self.mixer = Mixer()
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.lm_head = nn.Linear(8, 20, bias=False)
        self.lm_head.weight = self.tok.weight  # tied: one tensor, two names


def coefficients(model: nn.Module, groups) -> dict[str, float | None]:
    """Each parameter's weight_decay as the optimizer will see it (None: in no group)."""
    of = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in of, "a tensor in two groups"
            of[id(p)] = g["weight_decay"]
    return {n: of.get(id(p)) for n, p in model.named_parameters()}


def rules(groups) -> dict[str, str]:
    return {e.name: e.rule for e in groups.plan.entries}


# By construction: what each tensor of LM gets without overrides, at base 0.01 ...
DEFAULT = {
    "tok.weight": 0.01,  # embedding (tied with lm_head.weight)
    "latents": 0.0,  # learned query
    "mixer.in_proj.weight": 0.01,
    "mixer.in_proj.bias": 0.0,
    "mixer.A_log": 0.0,  # state-space, although 2-D
    "mixer.D": 0.0,
    "mixer.dt_bias": 0.0,
    "mixer.norm.weight": 0.0,
    "mixer.norm.bias": 0.0,
    "mixer.out_proj.weight": 0.01,
    "frozen.weight": None,
    "frozen.bias": None,
}
# ... and with this override table (the first matching glob wins; base 0.1).
TABLE = {
    "*": 0.1,
    "lm_head.weight": 0.05,  # matches the tied embedding through its alias
    "mixer.A_log": True,  # decays at the base value despite the state-space rule
    "*.bias": True,  # every bias decays at the base value ...
    "mixer.in_proj.*": 0,  # ... but in_proj.bias was taken by '*.bias' above: only the weight
    "mixer.out_proj.weight": "x0.5",
    "latents": "x2",
    "mixer.norm.weight": 0.3,
    "frozen.*": 0.7,  # frozen tensors stay out whatever the override says
}
EXPECTED = {
    "tok.weight": 0.05,
    "latents": 0.2,
    "mixer.in_proj.weight": 0.0,
    "mixer.in_proj.bias": 0.1,
    "mixer.A_log": 0.1,
    "mixer.D": 0.0,
    "mixer.dt_bias": 0.0,  # '*.bias' needs ".bias": dt_bias stays out (state-space)
    "mixer.norm.weight": 0.3,
    "mixer.norm.bias": 0.1,
    "mixer.out_proj.weight": 0.05,
    "frozen.weight": None,
    "frozen.bias": None,
}


def test_state_space_and_learned_query_names_do_not_decay_by_default():
    model = LM()
    groups = param_groups(model)
    assert coefficients(model, groups) == DEFAULT
    r = rules(groups)
    assert r["mixer.A_log"] == "state-space (A_log)"
    assert r["mixer.D"] == "state-space (D)"
    assert r["mixer.dt_bias"] == "state-space (dt_bias)"
    assert r["latents"] == "learned query (latents)"
    q = nn.Module()
    q.query_tokens = nn.Parameter(torch.zeros(1, 4, 8))  # BLIP-2's Q-Former
    assert rules(param_groups(q)) == {"query_tokens": "learned query (query_tokens)"}


def test_no_name_rules_decays_them_like_any_tensor():
    model = LM()
    groups = param_groups(model, 0.1, name_rules=())
    got = coefficients(model, groups)
    assert got["mixer.A_log"] == 0.1 and got["latents"] == 0.1  # 2-D: decays
    assert got["mixer.D"] == 0.0 and got["mixer.dt_bias"] == 0.0  # 1-D: as any 1-D tensor
    r = rules(groups)
    assert r["mixer.A_log"] == "ndim >= 2" and r["mixer.D"] == "ndim <= 1"
    assert r["mixer.dt_bias"] == "bias"


def test_no_weight_decay_attribute():
    model = nn.Sequential(nn.Linear(4, 4))
    model[0].weight._no_weight_decay = True  # what the reference Mamba code sets
    for kw in ({}, {"name_rules": ()}):  # not a name rule: name_rules cannot turn it off
        groups = param_groups(model, 0.1, **kw)
        assert rules(groups)["0.weight"] == "_no_weight_decay attribute"
        assert coefficients(model, groups)["0.weight"] == 0.0
    groups = param_groups(model, 0.1, overrides={"0.weight": True})
    assert coefficients(model, groups)["0.weight"] == 0.1


def test_override_table_gives_each_tensor_its_value():
    model = LM()
    groups = param_groups(model, weight_decay=TABLE)
    assert coefficients(model, groups) == pytest.approx(EXPECTED)
    # equal values share one group; the no-decay group comes last
    wds = [g["weight_decay"] for g in groups]
    assert len(wds) == len(set(wds)) and wds[-1] == 0.0
    assert sorted(wds) == pytest.approx(sorted({v for v in EXPECTED.values() if v is not None}))
    assert groups.plan.weight_decay == 0.1
    assert groups.plan.overrides == tuple((k, v) for k, v in TABLE.items() if k != "*")


def test_the_keyword_form_means_the_same():
    base = TABLE["*"]
    rest = {k: v for k, v in TABLE.items() if k != "*"}
    a = param_groups(LM(), weight_decay=TABLE)
    b = param_groups(LM(), base, overrides=rest)
    assert a.plan.entries == b.plan.entries
    assert [g["weight_decay"] for g in a] == [g["weight_decay"] for g in b]


def test_the_first_matching_glob_wins():
    model = LM()
    got = coefficients(
        model, param_groups(model, 0.01, overrides={"mixer.*": 0.2, "*.weight": 0.3})
    )
    assert got["mixer.in_proj.weight"] == 0.2 and got["mixer.norm.weight"] == 0.2
    assert got["tok.weight"] == 0.3
    got = coefficients(
        model, param_groups(model, 0.01, overrides={"*.weight": 0.3, "mixer.*": 0.2})
    )
    assert got["mixer.in_proj.weight"] == 0.3 and got["mixer.A_log"] == 0.2


def test_overrides_win_over_every_other_rule():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))

        def no_weight_decay(self):
            return {"pos_embed"}

    model = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'fc.*' matched, though the overrides set it aside
        groups = param_groups(
            model,
            0.1,
            exclude=["fc.weight"],
            multipliers={"fc.*": 3.0},  # would scale fc.weight, but the override decides
            overrides={"fc.weight": True, "pos_embed": 0.02, "fc.bias": "x0.5"},
        )
    assert coefficients(model, groups) == pytest.approx(
        {"fc.weight": 0.1, "fc.bias": 0.05, "pos_embed": 0.02}
    )


def test_decay_scales_still_apply_to_overridden_tensors():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = param_groups(
        model, 0.1, overrides={"1.weight": True}, decay_scales={"1.*": "corrected"}
    )
    by_name = {n: p for n, p in model.named_parameters()}
    g = next(g for g in groups if any(p is by_name["1.weight"] for p in g["params"]))
    assert g["weight_decay"] == 0.1 and g["decay_scale"] == "corrected"
    assert len(g["params"]) == 1  # 0.weight decays at 0.1 too, but without the scale key
    assert (
        rules(groups)["1.weight"] == "override '1.weight': decay, decay_scale 'corrected' by '1.*'"
    )


def test_a_zero_grad_adamw_step_shrinks_exactly_the_decayed_tensors():
    """With zero gradients Adam's update is 0, so torch's AdamW multiplies each tensor by
    1 - lr * weight_decay and leaves the others as they were: the real optimizer as oracle."""
    torch.manual_seed(0)
    model = LM()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    lr = 0.1
    opt = torch.optim.AdamW(param_groups(model, weight_decay=TABLE), lr=lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    for n, p in model.named_parameters():
        wd = EXPECTED[n] or 0.0
        assert torch.equal(p.detach(), before[n] * (1 - lr * wd)), n
        assert torch.equal(p.detach(), before[n]) == (wd == 0), n


def test_plan_shows_the_base_and_the_override_that_decided():
    model = LM()
    plan = param_groups(
        model, weight_decay={"lm_head.weight": 0.05, "*.bias": True, "mixer.A_log": 0}
    ).plan
    text = str(plan)
    head = text.splitlines()[0]
    assert "base weight_decay=0.01, the default: no '*' key; 3 overrides" in head
    assert "override 'lm_head.weight' = 0.05" in text
    assert "override '*.bias': decay" in text
    assert "override 'mixer.A_log': no decay" in text
    per_tensor = plan.format(per_tensor=True)
    assert re.search(
        r"tok\.weight \(= lm_head\.weight\) .* override 'lm_head\.weight' = 0\.05", per_tensor
    )
    assert "base weight_decay=0.2; 1 override)" in str(
        param_groups(model, {"*": 0.2, "latents": False}).plan
    )
    r = rules(param_groups(model, 0.1, overrides={"latents": "x0.5", "mixer.D": False}))
    assert r["latents"] == "override 'latents' = x0.5"
    assert r["mixer.D"] == "override 'mixer.D': no decay"
    # without overrides the header is as before
    assert str(param_groups(model, 0.1).plan).startswith("Weight decay plan (weight_decay=0.1): ")
    assert str(param_groups(model, {"*": 0.1}).plan).startswith(
        "Weight decay plan (weight_decay=0.1): "
    )


def test_frozen_stays_out_and_counts_as_matched():
    model = LM()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every glob matches: no warning
        groups = param_groups(model, overrides={"frozen.*": True})
    assert coefficients(model, groups)["frozen.weight"] is None
    assert rules(groups)["frozen.weight"] == "frozen (left out)"


def test_an_unmatched_glob_warns():
    with pytest.warns(UserWarning, match=r"param_groups: override 'nope\.\*' matched no parameter"):
        param_groups(LM(), weight_decay={"nope.*": 0.1, "latents": True})
    with pytest.warns(UserWarning, match="override 'A_log' matched no parameter"):  # full names
        param_groups(LM(), overrides={"A_log": 0})


@pytest.mark.parametrize(
    "value", [-0.1, float("nan"), float("inf"), "0.5", "x", "x-1", "xnan", "half", None, [0.1]]
)
def test_invalid_values(value):
    accepted = (
        "expected a finite number >= 0 (0: no decay), True (decay at the base value), "
        "False (no decay) or a scale of the base such as 'x0.5'"
    )
    msg = f"weight_decay['*.A_log']={value!r} is invalid: {accepted}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        param_groups(LM(), weight_decay={"*.A_log": value})
    msg = f"overrides['*.A_log']={value!r} is invalid: {accepted}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        param_groups(LM(), 0.1, overrides={"*.A_log": value})


def test_invalid_arguments():
    model = LM()
    with pytest.raises(ValueError, match="weight_decay and overrides are both mappings"):
        param_groups(model, {"*": 0.1}, overrides={"latents": 0})
    with pytest.raises(ValueError, match=re.escape("weight_decay['*']=True is invalid")):
        param_groups(model, {"*": True})
    with pytest.raises(ValueError, match=re.escape("weight_decay['*']=-1 is invalid")):
        param_groups(model, {"*": -1})
    with pytest.raises(ValueError, match=re.escape("overrides['*']=0.2 is invalid: the base")):
        param_groups(model, 0.1, overrides={"*": 0.2})
    with pytest.raises(ValueError, match=re.escape("weight_decay key 3 is invalid")):
        param_groups(model, {3: 0.1})
    with pytest.raises(ValueError, match=re.escape("weight_decay=-0.1 is invalid")):
        param_groups(model, -0.1, overrides={"latents": 0})
    with pytest.raises(ValueError, match="below the smallest normal float"):
        param_groups(model, {"latents": 1e-320})


def test_overrides_that_are_no_mapping_or_scale_past_range_are_refused():
    model = nn.Linear(3, 3)
    for bad in (5, "*.bias"):
        with pytest.raises(ValueError, match="overrides=") as err:
            param_groups(model, 0.1, overrides=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="weight"):  # 10 x 1e308 overflows to inf
        param_groups(model, weight_decay={"*": 10.0, "weight": "x1e308"})
