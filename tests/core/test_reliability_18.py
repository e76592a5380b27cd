"""Reliability: corrupt weights are refused, `registry validate --deep` loads them, mistakes are errors."""

import pytest
import torch
from omegaconf import OmegaConf
from toy_heads import ToyPlugin, toy_registry, toy_spec

import l4p_framework.plugins as plugins
from l4p_framework import L4P, compose, load_encoder, save_encoder, save_head
from l4p_framework.cli.main import main
from l4p_framework.encoder import build_encoder
from l4p_framework.errors import InputError, RegistryError, WeightsError
from l4p_framework.registry import load_registry
from l4p_framework.testing import fresh_host, tiny_encoder


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """registry.yaml with a saved tiny encoder and a toy head 'alpha'; the CLI sees the toy plugin."""
    path, host, model = toy_registry(tmp_path)
    monkeypatch.setattr(plugins, "_HOST", host)
    return path, host, model


def _edit(path, **changes):
    """Set dotted keys of registry.yaml, e.g. _edit(path, **{"window.stride": 0})."""
    data = OmegaConf.load(path)
    for key, value in changes.items():
        OmegaConf.update(data, key, value)
    path.write_text(OmegaConf.to_yaml(data))


def _resave_head(path, host, model, module, config=None):
    """Overwrite alpha's weights with `module` and register the new file's real sha256."""
    spec = host.get_head("alpha")
    head_path = path.parent / "weights" / "alpha.safetensors"
    sha = save_head(head_path, module, spec, config or model.configs["alpha"], model.encoder.info)
    _edit(path, **{"heads.alpha.sha256": sha})
    return head_path


# -- 2. NaN / Inf weights -------------------------------------------------------------------------
def test_head_file_with_nan_weights_is_refused_naming_file_and_tensor(bundle):
    path, host, model = bundle
    module = model.heads["alpha"]
    with torch.no_grad():
        module.mlp[0].weight[0, :12] = float("nan")
    head_path = _resave_head(path, host, model, module)
    with pytest.raises(WeightsError) as info:
        L4P.from_registry(path, host=host)
    message = str(info.value)
    assert str(head_path) in message
    assert "tensor 'mlp.0.weight' has 12 NaN/Inf values" in message
    assert "corrupt, retrain or re-download it" in message and "\n" not in message


def test_encoder_file_with_inf_weights_is_refused_naming_file_and_tensor(tmp_path):
    encoder = build_encoder("tiny")
    with torch.no_grad():
        encoder.blocks[1].mlp.fc1.weight[0, :3] = float("inf")
    encoder.freeze()  # fingerprint of the corrupt weights: the file is self-consistent
    path = save_encoder(encoder, tmp_path / "encoder.safetensors")
    with pytest.raises(
        WeightsError, match=r"encoder\.safetensors: tensor 'blocks\.1\.mlp\.fc1\.weight' has 3 NaN/Inf"
    ):
        load_encoder(path, precision="fp32")


# -- 3. l4p registry validate --deep ---------------------------------------------------------------
def test_validate_deep_reports_a_wrong_shape_head_whose_sha256_matches(bundle, capsys):
    path, host, model = bundle
    spec = host.get_head("alpha")
    narrow = spec.config_model(hidden=8)  # the registry builds alpha with hidden: 16
    module = compose(["alpha"], host=host, encoder=model.encoder, configs={"alpha": {"hidden": 8}})
    head_path = _resave_head(path, host, model, module.heads["alpha"], narrow)
    args = ["registry", "validate", "--registry", str(path)]
    assert main(args) == 0  # the sha256 matches: plain validation cannot see it
    capsys.readouterr()
    assert main([*args, "--deep"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("l4p: error:") and "Traceback" not in err
    assert "heads.alpha.weights" in err and str(head_path) in err and "wrong shapes" in err


def test_validate_deep_reports_nan_weights_and_fingerprint_mismatch(bundle, capsys):
    path, host, model = bundle
    module = model.heads["alpha"]
    with torch.no_grad():
        module.mlp[2].bias[:] = float("nan")
    _resave_head(path, host, model, module)
    _edit(path, **{"encoder.fingerprint": "0" * 64})
    assert main(["registry", "validate", "--registry", str(path), "--deep"]) == 2
    err = capsys.readouterr().err
    assert "heads.alpha.weights" in err and "tensor 'mlp.2.bias' has" in err
    assert "encoder.weights" in err and "fingerprint" in err and "0000000000000000" in err


def test_validate_deep_passes_a_good_registry(bundle, capsys):
    path, _, _ = bundle
    assert main(["registry", "validate", "--registry", str(path), "--deep"]) == 0
    assert "every weights file loaded" in capsys.readouterr().out


# -- 4a. window.stride ---------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [0, -4])
def test_stride_below_one_is_refused_with_the_key_path(bundle, stride):
    path, host, _ = bundle
    _edit(path, **{"window.stride": stride})
    with pytest.raises(RegistryError, match=r"window\.stride: must be >= 1"):
        load_registry(path)
    with pytest.raises(RegistryError, match=r"window\.stride: must be >= 1"):
        L4P.from_registry(path, host=host)


def test_stride_longer_than_the_window_is_refused(bundle, capsys):
    path, host, _ = bundle
    _edit(path, **{"window.stride": 9})  # the tiny encoder's window is 8 frames
    with pytest.raises(RegistryError, match=r"window\.stride must be <= 8 .*got 9"):
        L4P.from_registry(path, host=host)
    assert main(["registry", "validate", "--registry", str(path)]) == 2
    assert "window.stride must be <= 8" in capsys.readouterr().err
    _edit(path, **{"window.stride": 8})
    assert L4P.from_registry(path, host=host).window_stride == 8


# -- 4b. misspelled preset next to a weights file -------------------------------------------------
def test_misspelled_preset_next_to_weights_is_refused_with_a_suggestion(bundle, capsys):
    path, host, _ = bundle
    _edit(path, **{"encoder.preset": "l4p-cpu-smal"})
    with pytest.raises(RegistryError) as info:
        L4P.from_registry(path, host=host)
    message = str(info.value)
    assert "encoder.preset" in message and "'l4p-cpu-smal'" in message
    assert "did you mean 'l4p-cpu-small'?" in message
    assert main(["registry", "validate", "--registry", str(path)]) == 2
    assert "did you mean 'l4p-cpu-small'?" in capsys.readouterr().err


# -- 4c. heads given as a string -----------------------------------------------------------------
def test_heads_as_a_string_is_refused(bundle):
    path, host, _ = bundle
    expected = r"heads must be a list of head names, e\.g\. \['alpha'\], got 'alpha'"
    with pytest.raises(InputError, match=expected):
        compose("alpha", host=host, encoder=tiny_encoder())
    with pytest.raises(InputError, match=expected):
        compose("alpha", registry=path, host=host)
    with pytest.raises(InputError, match=expected):
        L4P.from_registry(path, heads="alpha", host=host)


# -- 4d. NaN intrinsics --------------------------------------------------------------------------
def test_nan_intrinsics_are_refused_in_user_words():
    host = fresh_host(ToyPlugin(toy_spec("alpha")))
    model = compose(["alpha"], host=host, encoder=tiny_encoder())
    video = torch.rand(1, 3, 8, 64, 64)
    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]])
    K[0, 1, 1] = float("nan")
    with pytest.raises(InputError) as info:
        model(video, intrinsics=K)
    message = str(info.value)
    assert message.startswith("intrinsics K must be finite")
    assert "at fy" in message and "pass fx, fy, cx, cy in pixels" in message
    K = torch.tensor([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]).repeat(1, 8, 1, 1)
    K[0, 3, 0, 2] = float("inf")
    with pytest.raises(
        InputError, match=r"finite \(got 1 NaN/Inf values, the first at cx of intrinsics\[0, 3\]\)"
    ):
        model(video, intrinsics=K)


def test_model_calls_refuse_heads_as_a_string_and_a_bad_window_stride():
    model = compose(["depth"], encoder="tiny")
    with pytest.raises(InputError, match=r"heads must be a list of head names, e.g. \['depth'\]"):
        model(torch.rand(1, 3, 8, 64, 64), heads="depth")
    for stride in (0, -1, 99):
        with pytest.raises(InputError, match="window_stride must be in 1.."):
            L4P(tiny_encoder(), window_stride=stride)
