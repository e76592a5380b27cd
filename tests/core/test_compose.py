"""Composition: encoder frozen by construction, add/remove heads, windows, independence of outputs."""

import dataclasses

import pytest
import torch
from toy_heads import ToyPlugin, toy_spec

from l4p_framework import L4P, compose
from l4p_framework.data.video import FrameTransform
from l4p_framework.errors import InputError, PluginError
from l4p_framework.testing import fresh_host, tiny_encoder
from l4p_framework.windows import pingpong_indices, plan_windows


@pytest.fixture
def host():
    return fresh_host(ToyPlugin(toy_spec("a", 2), toy_spec("b", 3), toy_spec("c", 1)))


def test_encoder_frozen_and_stays_eval(host):
    model = compose(["a", "b"], host=host)
    model.train()
    assert not model.encoder.training and model.heads["a"].training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())


def test_union_of_layers_runs_encoder_once_up_to_deepest(host):
    model = compose(["a", "b"], host=host)
    assert model.layers == [2, 3]
    calls = []
    for i, block in enumerate(model.encoder.blocks):
        block.register_forward_hook(lambda *args, i=i: calls.append(i))
    model(torch.rand(1, 3, 8, 64, 64))
    assert calls == [0, 1, 2]


def test_adding_or_removing_heads_never_changes_other_outputs(host):
    video = torch.rand(2, 3, 8, 64, 64)
    alone = compose(["a"], host=host)
    ref = alone(video)["a"]["value"]
    alone.add_head(host.get_head("c"))
    assert torch.equal(alone(video)["a"]["value"], ref)
    alone.remove_head("c")
    assert torch.equal(alone(video)["a"]["value"], ref)
    together = compose(["c", "b", "a"], host=host)  # same per-head init whatever the composition order
    assert torch.equal(together(video)["a"]["value"], ref)
    with pytest.raises(PluginError, match="already composed"):
        together.add_head(host.get_head("a"))


def test_windows_and_padding():
    assert [(w.start, w.overlap) for w in plan_windows(40, 16, 8)] == [(0, 0), (8, 8), (16, 8), (24, 8)]
    assert [(w.start, w.overlap) for w in plan_windows(20, 8, 4)][-1] == (12, 4)
    assert [(w.start, w.overlap) for w in plan_windows(21, 8, 4)][-1] == (13, 7)
    assert pingpong_indices(3, 8).tolist() == [0, 1, 2, 1, 0, 1, 2, 1]


def test_long_and_short_videos(host):
    model = compose(["a"], host=host)
    for frames in (3, 8, 21):
        out = model(torch.rand(1, 3, frames, 64, 64))
        assert out["a"]["value"].shape == (1, 1, frames, 64, 64)
    video = torch.rand(1, 3, 16, 64, 64)
    full = model(video)["a"]["value"]
    window = model(video[:, :, 8:])["a"]["value"]
    assert torch.equal(full[:, :, 8:], window)  # overwrite stitching: the last window wins


@pytest.mark.parametrize(
    "video, message",
    [
        (torch.rand(3, 8, 64, 64), "5 dims"),
        (torch.rand(1, 4, 8, 64, 64), "3 colour channels"),
        (torch.rand(1, 3, 8, 64, 64) * 255, r"\[0, 1\]"),
        (torch.full((1, 3, 8, 64, 64), float("nan")), "NaN"),
        (torch.zeros(1, 3, 8, 64, 64, dtype=torch.uint8), "float"),
    ],
)
def test_bad_videos(host, video, message):
    with pytest.raises(InputError, match=message):
        compose(["a"], host=host)(video)


def test_other_sizes_are_letterboxed_and_outputs_come_back_at_the_input_size(host):
    model = compose(["a"], host=host)
    video = torch.rand(1, 3, 8, 60, 90)
    out = model(video)["a"]["value"]
    assert out.shape == (1, 1, 8, 60, 90)
    squashed = model(video, resize="squash")["a"]["value"]
    assert squashed.shape == (1, 1, 8, 60, 90) and not torch.equal(out, squashed)
    with pytest.raises(InputError, match="resize mode"):
        model(video, resize="stretch")
    # the same as fitting the frames into the window by hand and resampling the outputs back
    transform = FrameTransform.from_sizes((60, 90), (64, 64), "letterbox")
    fitted = transform.apply(video[0])[None]
    torch.testing.assert_close(out, transform.invert_map(model(fitted)["a"]["value"]), rtol=0, atol=1e-6)


def test_heads_are_plain_modules_and_l4p_from_encoder(host):
    model = L4P(tiny_encoder())
    module = model.add_head(host.get_head("b"), {"hidden": 8})
    assert model.heads["b"] is module and isinstance(module, torch.nn.Module)
    assert model.configs["b"].hidden == 8


@pytest.mark.parametrize("frames", [3, 8, 16, 20, 21, 40])
def test_streamed_windows_match_the_plan(frames):
    from l4p_framework.windows import iter_windows

    stream = (torch.full((3, 2, 2), float(i)) for i in range(frames))
    got = [(w.start, w.overlap, clip[0, :, 0, 0].tolist()) for w, clip, _ in iter_windows(stream, 8, 4)]
    plan = plan_windows(max(frames, 8), 8, 4)
    assert [(s, o) for s, o, _ in got] == [(w.start, w.overlap) for w in plan]
    for start, _, values in got:  # each window holds exactly its frames (or the ping-pong padding)
        expected = pingpong_indices(frames, 8).tolist() if frames < 8 else list(range(start, start + 8))
        assert values == [float(v) for v in expected]


def matching_spec(name: str, uses: bool):
    """A toy head that reads the shared matching when `uses` (checking it is the window's)."""
    spec = toy_spec(name)
    build = spec.build

    def build_reader(info, config):
        decoder = build(info, config)
        forward = decoder.forward

        def read(features, batch):
            if uses:
                assert batch["matches"].backward.shape[-2:] == batch["frames"].shape[-2:]
            return forward(features, batch)

        decoder.forward = read
        return decoder

    return dataclasses.replace(spec, build=build_reader, uses_matching=lambda config: uses)


def test_shared_matching_runs_once_per_window_and_only_when_a_head_reads_it(monkeypatch):
    import l4p_framework.matching as matching

    calls = []
    real = matching.compute_matches
    monkeypatch.setattr(
        matching, "compute_matches", lambda video, config: calls.append(video.shape) or real(video, config)
    )
    host = fresh_host(
        ToyPlugin(matching_spec("m1", True), matching_spec("m2", True), matching_spec("plain", False))
    )
    video = torch.rand(1, 3, 24, 48, 80)  # input 48 x 80, model window 8 x 64 x 64
    compose(["plain"], host=host)(video)
    assert calls == []  # no head reads it: never computed
    model = compose(["m1", "m2", "plain"], host=host)
    out = model(video)
    windows = plan_windows(24, model.encoder.config.num_frames, model.window_stride)
    assert len(windows) == 5  # once per window at the input size, for two readers:
    assert calls == [(1, 3, 8, 48, 80)] * len(windows)
    assert out["m1"]["value"].shape == (1, 1, 24, 48, 80)
    calls.clear()
    model(video, heads=["plain"])
    assert calls == []


def test_streamed_outputs_are_handed_over_in_order_and_equal_the_whole_result(host):
    """on_frames receives each streamable output once, frame chunks in order, as final as forward's."""
    model = compose(["a"], host=host)
    video = torch.rand(1, 3, 27, 64, 64)
    whole = model(video)["a"]["value"]
    chunks: list[tuple[int, torch.Tensor]] = []
    rest = model.stream(
        (video[:, :, i] for i in range(27)),
        on_frames=lambda head, outputs, first: chunks.append((first, outputs["value"])),
    )
    assert "value" not in rest["a"]
    starts = [first for first, _ in chunks]
    assert starts == sorted(starts) and starts[0] == 0 and len(chunks) > 2
    assert all(a + c.shape[2] == b for (a, c), b in zip(chunks, starts[1:]))
    assert torch.equal(torch.cat([c for _, c in chunks], 2), whole)
