"""A video file that ends early yields the frames it has and says so (DataWarning), never silently."""

from __future__ import annotations

import warnings

import av
import numpy as np
import pytest

from l4p_framework.data.video import open_video, read_video
from l4p_framework.errors import DataWarning, InputError


def _faststart_mp4(path, num_frames=40, size=64):
    """An MP4 whose index (moov atom) is at the start, as web and phone videos usually are."""
    frames = np.random.default_rng(0).integers(0, 255, (num_frames, size, size, 3), dtype=np.uint8)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat"), "the index must precede the frames"
    return path


@pytest.fixture
def truncated(tmp_path):
    full = _faststart_mp4(tmp_path / "full.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.45)])
    return cut


def test_truncated_video_warns_with_the_decoded_count(truncated):
    source = open_video(truncated)
    assert source.num_frames == 40  # what the index declares
    with pytest.warns(DataWarning) as record:
        frames = list(source)
    assert 0 < len(frames) < 40
    (warning,) = record
    message = str(warning.message)
    assert str(truncated) in message
    assert f"decoded {len(frames)} of 40 frames" in message
    assert f"results cover frames 0..{len(frames) - 1}" in message
    assert "\n" not in message


def test_read_video_of_a_truncated_file_warns_too(truncated):
    with pytest.warns(DataWarning, match="truncated or corrupt"):
        video = read_video(truncated)
    assert 0 < video.shape[1] < 40


def test_complete_video_and_early_stop_do_not_warn(tmp_path, truncated):
    full = _faststart_mp4(tmp_path / "ok.mp4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(open_video(full))) == 40
        assert read_video(truncated, max_frames=3).shape[1] == 3  # stopped before the missing frames


class _FailingContainer:
    """Wraps a PyAV container: decoding raises InvalidDataError after `good` frames."""

    def __init__(self, container, good):
        self.container, self.good = container, good
        self.streams = container.streams

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()

    def decode(self, stream):
        for i, frame in enumerate(self.container.decode(stream)):
            if i == self.good:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield frame


def test_decoding_error_mid_stream_warns_and_keeps_the_good_frames(tmp_path, monkeypatch):
    source = open_video(_faststart_mp4(tmp_path / "v.mp4", num_frames=12))
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: _FailingContainer(real_open(*a, **k), good=5))
    with pytest.warns(DataWarning, match=r"decoded 5 of 12 frames.*frames 0\.\.4 \(InvalidDataError"):
        assert len(list(source)) == 5


def test_decoding_error_at_the_first_frame_is_an_error(tmp_path, monkeypatch):
    source = open_video(_faststart_mp4(tmp_path / "v.mp4", num_frames=12))
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: _FailingContainer(real_open(*a, **k), good=0))
    with pytest.raises(InputError, match=r"v\.mp4: decoding failed at frame 0 \(InvalidDataError"):
        list(source)
