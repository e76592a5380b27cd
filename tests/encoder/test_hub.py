"""Encoders by Hugging Face hub id (hf://...), fully offline: a hub cache built by hand in tmp_path."""

import json
import sys

import pytest
import torch

from l4p_framework import L4P
from l4p_framework.encoder import build_encoder, load_encoder
from l4p_framework.encoder.hub import parse_hub_id, resolve_hub_source
from l4p_framework.errors import RegistryError, WeightsError
from l4p_framework.registry import check_files, check_weights, load_registry, lock_registry
from l4p_framework.safetensors_io import write_safetensors
from l4p_framework.testing import fresh_host

hf_constants = pytest.importorskip("huggingface_hub.constants")

MAIN = "a" * 40
V1 = "b" * 40
REPO = "l4p-test/tiny-videomae"


def _hf_config(encoder) -> dict:
    """transformers' VideoMAEConfig of an l4p encoder (use_mean_pooling False: a final LayerNorm)."""
    c = encoder.config
    return {
        "model_type": "videomae",
        "hidden_size": c.width,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.mlp_dim,
        "patch_size": c.patch_size,
        "tubelet_size": c.tubelet,
        "num_frames": c.num_frames,
        "image_size": c.image_size[0],
        "qkv_bias": True,
        "layer_norm_eps": c.norm_eps,
        "use_mean_pooling": False,
        "hidden_act": "gelu",
    }


def _hf_state(encoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under transformers VideoMAEForPreTraining key names (v4 q_bias/v_bias)."""
    sd, out = encoder.state_dict(), {}
    for name in ("weight", "bias"):
        out[f"videomae.embeddings.patch_embeddings.projection.{name}"] = sd[f"patch_embed.proj.{name}"]
        out[f"videomae.layernorm.{name}"] = sd[f"norm.{name}"]
    for i in range(encoder.config.depth):
        src, dst = f"blocks.{i}.", f"videomae.encoder.layer.{i}."
        q, k, v = sd[src + "attn.qkv.weight"].chunk(3)
        for n, t in (("query", q), ("key", k), ("value", v)):
            out[f"{dst}attention.attention.{n}.weight"] = t.clone()
        out[dst + "attention.attention.q_bias"] = sd[src + "attn.q_bias"]
        out[dst + "attention.attention.v_bias"] = sd[src + "attn.v_bias"]
        for old, new in (
            ("attn.proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
        ):
            for name in ("weight", "bias"):
                out[f"{dst}{new}.{name}"] = sd[f"{src}{old}.{name}"]
    out["decoder.norm.weight"] = torch.ones(4)  # pre-training decoder: dropped by the loader
    return {k: v.contiguous() for k, v in out.items()}


def _snapshot(cache, repo, commit, files, refs=(), absent=()):
    """Lay out models--OWNER--NAME the way huggingface_hub's cache does: refs/<ref> holds the commit,
    snapshots/<commit>/<file> the files, .no_exist/<commit>/<file> marks a file the repo lacks."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for name, write in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        write(snap / name)
    for ref in refs:
        (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)  # no newline: huggingface_hub reads it verbatim
    for name in absent:
        (root / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
        (root / ".no_exist" / commit / name).touch()
    return snap


def _hf_files(encoder, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    files = {
        "config.json": lambda p: p.write_text(json.dumps(_hf_config(encoder))),
        "model.safetensors": lambda p: write_safetensors(p, _hf_state(encoder), {"format": "pt"}),
    }
    if mean is not None:
        pre = json.dumps({"image_mean": list(mean), "image_std": list(std)})
        files["preprocessor_config.json"] = lambda p: p.write_text(pre)
    return files


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline hub cache holding REPO at main (tiny encoder, seed 1) and at tag v1 (seed 2, only a
    pytorch_model.bin and no preprocessor_config.json), plus a VideoMAEv2 .pth repo."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the environment once, at import: make a running process see it too
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    main, v1 = build_encoder("tiny", seed=1).freeze(), build_encoder("tiny", seed=2).freeze()
    main_snap = _snapshot(cache, REPO, MAIN, _hf_files(main), refs=["main"])
    v1_files = _hf_files(v1, mean=None)
    v1_files["pytorch_model.bin"] = lambda p: torch.save(_hf_state(v1), p)
    del v1_files["model.safetensors"]
    _snapshot(
        cache, REPO, V1, v1_files, refs=["v1"], absent=["preprocessor_config.json", "model.safetensors"]
    )
    v2 = build_encoder("tiny", seed=3).freeze()
    state = {f"encoder.{k}": v for k, v in v2.state_dict().items()}
    _snapshot(
        cache, "l4p-test/v2", MAIN, {"ckpt/vit.pth": lambda p: torch.save({"model": state}, p)}, ["main"]
    )
    return {"cache": cache, "main": main, "v1": v1, "v2": v2, "main_snapshot": main_snap}


def test_hub_id_loads_like_the_folder(hub_cache):
    encoder = load_encoder(f"hf://{REPO}", precision="fp32")
    direct = load_encoder(hub_cache["main_snapshot"], precision="fp32")
    assert encoder.fingerprint == direct.fingerprint == hub_cache["main"].fingerprint
    for (k, a), (k2, b) in zip(encoder.state_dict().items(), direct.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert encoder.config.name == f"hf:{REPO}"
    assert resolve_hub_source(f"hf://{REPO}") == hub_cache["main_snapshot"]


def test_revision_picks_another_snapshot(hub_cache):
    by_tag = load_encoder(f"hf://{REPO}@v1", precision="fp32")  # pytorch_model.bin, no preprocessor
    by_commit = load_encoder(f"hf://{REPO}@{V1}", precision="fp32")
    assert by_tag.fingerprint == by_commit.fingerprint == hub_cache["v1"].fingerprint
    assert by_tag.fingerprint != hub_cache["main"].fingerprint


def test_pth_file_in_a_repo_goes_through_the_pth_loader(hub_cache, monkeypatch):
    from l4p_framework.encoder import loading

    seen = []
    real = loading._load_videomaev2
    monkeypatch.setattr(
        loading, "_load_videomaev2", lambda path, preset: seen.append(path) or real(path, preset)
    )
    encoder = load_encoder("hf://l4p-test/v2/ckpt/vit.pth", preset="tiny", precision="fp32")
    assert encoder.fingerprint == hub_cache["v2"].fingerprint
    assert seen and seen[0].name == "vit.pth" and MAIN in str(seen[0])


def test_registry_with_hub_weights(hub_cache, tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(f"encoder:\n  preset: tiny\n  weights: hf://{REPO}\n")
    model = L4P.from_registry(path, host=fresh_host())
    assert model.encoder.fingerprint == hub_cache["main"].fingerprint
    reg = load_registry(path)
    assert check_files(reg) == [] and check_weights(reg, fresh_host()) == []  # no sha256: nothing to compare
    lock_registry(reg).save()  # sha256 of the cached model.safetensors, the fingerprint
    reg = load_registry(path)
    assert reg.registry.encoder.weights == f"hf://{REPO}"  # the id is kept, not turned into a path
    assert reg.registry.encoder.fingerprint == hub_cache["main"].fingerprint
    assert check_files(reg) == []
    L4P.from_registry(path, host=fresh_host())
    reg.registry.encoder.weights = f"hf://{REPO}@v1"  # another file: sha256 (and fingerprint) differ
    (problem,) = check_files(reg)
    assert "sha256" in problem and "model.safetensors" not in problem and "pytorch_model.bin" in problem
    with pytest.raises(RegistryError, match="sha256"):
        L4P.from_registry(reg, host=fresh_host())


def test_registry_refuses_a_malformed_hub_id(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text("encoder:\n  preset: tiny\n  weights: hf://just-a-name\n")
    with pytest.raises(RegistryError, match=r"encoder\.weights: .*malformed Hugging Face hub id"):
        load_registry(path)


def test_offline_missing_repo_names_id_cache_and_fix(hub_cache, tmp_path):
    with pytest.raises(WeightsError) as info:
        load_encoder("hf://l4p-test/not-cached")
    msg = str(info.value)
    assert "hf://l4p-test/not-cached" in msg and str(hub_cache["cache"]) in msg
    assert "HF_HUB_OFFLINE" in msg and "l4p encoder info hf://l4p-test/not-cached" in msg
    with pytest.raises(WeightsError, match=r"vit\.pth.*at revision 'v9'.*not in the hub cache"):
        load_encoder("hf://l4p-test/v2@v9/ckpt/vit.pth")
    path = tmp_path / "registry.yaml"
    path.write_text("encoder:\n  preset: tiny\n  weights: hf://l4p-test/not-cached\n")
    with pytest.raises(WeightsError, match=r"registry\.yaml: encoder\.weights: hf://l4p-test/not-cached"):
        L4P.from_registry(path, host=fresh_host())
    (problem,) = check_weights(load_registry(path), fresh_host())
    assert "not-cached" in problem and "heads not checked" in problem


def test_offline_uncached_preprocessor_config_is_not_skipped(hub_cache):
    (hub_cache["main_snapshot"] / "preprocessor_config.json").unlink()  # neither cached nor known absent
    with pytest.raises(WeightsError, match="preprocessor_config.json"):
        load_encoder(f"hf://{REPO}")


@pytest.mark.parametrize(
    "source, reason",
    [
        ("hf://", "expected hf://OWNER/NAME"),
        ("hf://name-only", "expected hf://OWNER/NAME"),
        ("hf://owner/na me", "expected hf://OWNER/NAME"),
        ("hf://owner/-name", "expected hf://OWNER/NAME"),
        ("hf://owner/name@", "expected hf://OWNER/NAME"),
        ("hf://own--er/name", "'--'"),
        ("hf://owner/name/", "not a file path"),
        ("hf://owner/name/a/../b.pth", "not a file path"),
        ("hf://owner/name/config.json", "must be a weights file"),
        ("hf://owner/name/vit.pth@main", "revision goes right after the repo name"),
    ],
)
def test_malformed_ids_are_refused(source, reason):
    with pytest.raises(WeightsError, match="malformed Hugging Face hub id") as info:
        load_encoder(source)
    assert reason in str(info.value)


def test_id_parts():
    assert parse_hub_id("hf://MCG-NJU/videomae-base").repo_id == "MCG-NJU/videomae-base"
    hub_id = parse_hub_id("hf://OpenGVLab/VideoMAEv2-Base@refs%2Fpr%2F1/sub/vit_b.pth")
    assert (hub_id.repo_id, hub_id.revision, hub_id.filename) == (
        "OpenGVLab/VideoMAEv2-Base",
        "refs/pr/1",
        "sub/vit_b.pth",
    )


def test_missing_huggingface_hub_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` fails
    with pytest.raises(WeightsError, match=r"pip install l4p-framework\[hub\]"):
        load_encoder("hf://MCG-NJU/videomae-base")


def _error(cls):
    return cls.__new__(cls)  # huggingface_hub's HTTP errors want a response; the type is what matters


def test_online_fetches_only_the_needed_files_of_one_commit(hub_cache, monkeypatch):
    """Online (simulated): the branch is resolved once, config.json pins the commit, safetensors is
    preferred, a repo without it falls back to pytorch_model.bin; remote errors are WeightsErrors."""
    import huggingface_hub
    from huggingface_hub import utils as hf_errors

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    calls = []

    def download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False):
        calls.append((filename, revision, local_files_only))
        if repo_id != REPO:
            raise _error(hf_errors.RepositoryNotFoundError)
        if revision not in (None, "main", "v1", MAIN, V1):
            raise _error(hf_errors.RevisionNotFoundError)
        commit = V1 if revision in ("v1", V1) else MAIN
        path = hub_cache["cache"] / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit / filename
        if not path.is_file():
            raise _error(hf_errors.EntryNotFoundError)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert load_encoder(f"hf://{REPO}@v1", precision="fp32").fingerprint == hub_cache["v1"].fingerprint
    assert calls == [
        ("config.json", "v1", False),
        ("preprocessor_config.json", V1, False),
        ("model.safetensors", V1, False),
        ("pytorch_model.bin", V1, False),
    ]
    calls.clear()
    load_encoder(f"hf://{REPO}")
    assert [c[0] for c in calls] == ["config.json", "preprocessor_config.json", "model.safetensors"]
    with pytest.raises(WeightsError, match="no repository 'l4p-test/nope'.*check the id"):
        load_encoder("hf://l4p-test/nope")
    with pytest.raises(WeightsError, match="has no revision 'v7'"):
        load_encoder(f"hf://{REPO}@v7")
    with pytest.raises(WeightsError, match=r"has no file 'other\.pth'"):
        load_encoder(f"hf://{REPO}/other.pth")
    (hub_cache["main_snapshot"] / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"no config\.json, so it is not a transformers VideoMAE repo"):
        load_encoder(f"hf://{REPO}")
