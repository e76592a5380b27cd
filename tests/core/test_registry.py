"""registry.yaml validation, overrides, head checkpoints and their errors."""

import pytest
import torch
from toy_heads import toy_registry

from l4p_framework import L4P, load_encoder
from l4p_framework.cli.main import main
from l4p_framework.errors import ConfigError, IncompatibleHeadError, PluginError, RegistryError, WeightsError
from l4p_framework.registry import load_registry
from l4p_framework.testing import fresh_host


@pytest.fixture
def bundle(tmp_path):
    """A registry with a saved tiny encoder and one trained-looking toy head 'alpha'."""
    return toy_registry(tmp_path)


def test_round_trip_through_registry(bundle):
    path, host, model = bundle
    loaded = L4P.from_registry(path, host=host)
    video = torch.rand(1, 3, 8, 64, 64)
    assert torch.equal(loaded(video)["alpha"]["value"], model(video)["alpha"]["value"])
    assert loaded.encoder.fingerprint == model.encoder.fingerprint  # stable across save/load


def test_typo_key_suggests(bundle):
    path, host, _ = bundle
    text = path.read_text().replace("sha256:", "sha265:", 1)
    path.write_text(text)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    msg = str(info.value)
    assert str(path) in msg and "sha265" in msg and "did you mean 'sha256'" in msg


def test_typo_in_head_params_is_caught_by_config_model(bundle):
    path, host, _ = bundle
    path.write_text(path.read_text().replace("hidden: 16", "hiden: 16"))
    with pytest.raises(
        RegistryError, match=r"heads\.alpha\.params\.hiden: unknown key \(did you mean 'hidden'\?\)"
    ):
        L4P.from_registry(path, host=host)


def test_wrong_type_names_key_path(bundle):
    path, host, _ = bundle
    with pytest.raises(RegistryError, match=r"encoder\.seed: .*integer.*found 'abc'"):
        load_registry(path, ["encoder.seed=abc"])


def test_override_of_unknown_key_and_plus_syntax(bundle):
    path, _, _ = bundle
    with pytest.raises(ConfigError, match="did you mean 'stride'"):
        load_registry(path, ["window.strid=4"])
    assert load_registry(path, ["window.stride=4"]).registry.window.stride == 4
    with pytest.raises(RegistryError, match="unknown key"):
        load_registry(path, ["+window.extra=1"])


def test_missing_weights_file(bundle):
    path, host, _ = bundle
    (path.parent / "weights" / "alpha.safetensors").unlink()
    with pytest.raises(WeightsError, match="alpha.safetensors do not exist"):
        L4P.from_registry(path, host=host)


def test_sha256_mismatch(bundle):
    path, host, _ = bundle
    head = path.parent / "weights" / "alpha.safetensors"
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        L4P.from_registry(path, host=host)


def test_unknown_plugin(bundle):
    path, _, _ = bundle
    with pytest.raises(PluginError, match="heads.alpha needs plugin '<in-memory>'.*not installed"):
        L4P.from_registry(path, host=fresh_host())


def test_fingerprint_mismatch_is_refused_naming_both(bundle, tmp_path):
    path, host, model = bundle
    other = load_encoder("tiny", seed=9)
    spec = host.get_head("alpha")
    from l4p_framework import load_head

    with pytest.raises(IncompatibleHeadError) as info:
        load_head(path.parent / "weights" / "alpha.safetensors", spec, other.info)
    assert model.encoder.fingerprint[:16] in str(info.value) and other.fingerprint[:16] in str(info.value)
    module, _, _ = load_head(
        path.parent / "weights" / "alpha.safetensors", spec, other.info, allow_fingerprint_mismatch=True
    )
    assert isinstance(module, torch.nn.Module)


def test_cli_registry_validate_reports_one_line(bundle, capsys, monkeypatch):
    path, host, _ = bundle
    import l4p_framework.plugins as plugins

    monkeypatch.setattr(plugins, "_HOST", host)
    assert main(["registry", "validate", "--registry", str(path)]) == 0
    (path.parent / "weights" / "encoder.safetensors").unlink()
    assert main(["registry", "validate", "--registry", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("l4p: error:") and "encoder.weights" in err and "Traceback" not in err
