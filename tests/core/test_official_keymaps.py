"""One rule for every head's `official_key_map` (issue 21, item 4).

Each head accepts either its own sub-dict (keys relative to `l4p_model.task_heads.<module>.`) or any
dict whose keys all carry the `l4p_model.` root (e.g. the whole official state dict), and the
official module -> l4p head mapping lives in one place (`l4p_framework.official.OFFICIAL_HEADS`).
"""

from __future__ import annotations

import importlib

import pytest
import torch

from l4p_framework.blocks import l4p_tracking_head_to_official
from l4p_framework.blocks.dense_head import dense_head_to_official
from l4p_framework.checkpoints import build_head
from l4p_framework.encoder.config import PRESETS
from l4p_framework.encoder.vit import VideoEncoder
from l4p_framework.errors import ConfigError, WeightsError
from l4p_framework.official import (
    ENCODER_PREFIX,
    OFFICIAL_HEADS,
    official_head_state,
    official_module,
    official_prefix,
    select_prefix,
)
from l4p_framework.plugins import get_plugin_host

HEAD_MODULES = {
    "depth": "l4p_head_depth.head",
    "flow": "l4p_head_flow.head",
    "motion": "l4p_head_motion.head",
    "pose": "l4p_head_pose.head",
    "tracking": "l4p_head_tracking.plugin",
}
for _module in HEAD_MODULES.values():
    pytest.importorskip(_module.split(".")[0])


def test_the_mapping_is_in_one_place():
    assert OFFICIAL_HEADS == {
        "depth": "depth",
        "flow_2d_backward": "flow",
        "dyn_mask": "motion",
        "camray": "pose",
        "track_2d": "tracking",
    }
    for module, head in OFFICIAL_HEADS.items():
        assert official_module(head) == module
        assert official_prefix(module) == f"l4p_model.task_heads.{module}."
        assert importlib.import_module(HEAD_MODULES[head]).OFFICIAL_MODULE == module
    with pytest.raises(ConfigError, match="no counterpart"):
        official_module("normals")


def _official(name: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = module.state_dict()
    return l4p_tracking_head_to_official(sd) if name == "tracking" else dense_head_to_official(sd)


@pytest.fixture(scope="module")
def heads():
    """{head name: (spec, module, relative official state dict)} on the tiny encoder."""
    host = get_plugin_host()
    info = VideoEncoder(PRESETS["tiny"]).info
    out = {}
    for name in OFFICIAL_HEADS.values():
        spec = host.get_head(name)
        head = build_head(spec, info, spec.config_model(), seed=5)
        out[name] = (spec, head, _official(name, head))
    return out


def _whole_state_dict(heads) -> dict[str, torch.Tensor]:
    """Every head's keys under its prefix, plus encoder keys: the layout of the official state dict."""
    whole = {ENCODER_PREFIX + "norm.weight": torch.ones(64), ENCODER_PREFIX + "norm.bias": torch.zeros(64)}
    for name, (_, _, relative) in heads.items():
        prefix = official_prefix(official_module(name))
        whole.update({prefix + k: v for k, v in relative.items()})
    return whole


@pytest.mark.parametrize("name", list(OFFICIAL_HEADS.values()))
def test_every_head_accepts_both_forms(heads, name):
    spec, head, relative = heads[name]
    own = head.state_dict()
    prefix = official_prefix(official_module(name))
    prefixed = {prefix + k: v for k, v in relative.items()}
    whole = _whole_state_dict(heads)
    for form in (relative, prefixed, whole):
        mapped = spec.official_key_map(form)
        assert mapped.keys() == own.keys(), name
        assert all(torch.equal(mapped[k], v) for k, v in own.items())
    # the head module's own function is the spec's
    assert importlib.import_module(HEAD_MODULES[name]).official_key_map is spec.official_key_map


@pytest.mark.parametrize("name", list(OFFICIAL_HEADS.values()))
def test_every_head_refuses_mixed_forms_and_a_dict_without_its_keys(heads, name):
    spec, _, relative = heads[name]
    whole = _whole_state_dict(heads)
    with pytest.raises(WeightsError, match="start with 'l4p_model.' and"):
        spec.official_key_map({**whole, **relative})
    prefix = official_prefix(official_module(name))
    others = {k: v for k, v in whole.items() if not k.startswith(prefix)}
    with pytest.raises(WeightsError, match=f"no key starts with '{prefix}'"):
        spec.official_key_map(others)


def test_select_prefix_rule():
    t = torch.zeros(1)
    assert select_prefix({"a.b": t}, "l4p_model.x.", "x") == {"a.b": t}
    assert select_prefix({"l4p_model.x.a": t, "l4p_model.y.b": t}, "l4p_model.x.", "x") == {"a": t}
    assert official_head_state({"l4p_model.task_heads.depth.k": t}, "depth") == {"k": t}
