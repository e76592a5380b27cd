"""Sliding windows over long videos: window plans and ping-pong padding of short clips."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError


@dataclass(frozen=True)
class Window:
    """One window: frames [start, start + size) of the (padded) video; `overlap` with the previous."""

    index: int
    start: int
    size: int
    overlap: int


def plan_windows(num_frames: int, size: int, stride: int) -> list[Window]:
    """Windows of `size` frames every `stride` frames covering [0, num_frames).

    num_frames must be >= size (pad short clips first). If the last regular window does not
    reach the end, one more window aligned to the end is added (its overlap is larger).
    """
    if stride <= 0 or stride > size:
        raise InputError(f"window stride must be in 1..{size} (the window size), got {stride}")
    if num_frames < size:
        raise InputError(f"video of {num_frames} frames is shorter than one window ({size}); pad it first")
    starts = list(range(0, num_frames - size + 1, stride))
    if starts[-1] + size < num_frames:
        starts.append(num_frames - size)
    windows = []
    for i, s in enumerate(starts):
        overlap = 0 if i == 0 else starts[i - 1] + size - s
        windows.append(Window(i, s, size, overlap))
    return windows


def pingpong_indices(num_frames: int, length: int) -> torch.Tensor:
    """Frame indices that mirror-pad a clip to `length`: 0..n-1, n-2..0, 1..n-1, ... (as L4P)."""
    if num_frames <= 0:
        raise InputError("cannot pad an empty video (0 frames)")
    if num_frames == 1:
        return torch.zeros(length, dtype=torch.long)
    period = 2 * num_frames - 2
    i = torch.arange(length) % period
    return torch.where(i < num_frames, i, period - i)


def pad_video(video: torch.Tensor, length: int) -> torch.Tensor:
    """video (B, 3, T, H, W) -> (B, 3, length, H, W) by ping-pong padding (no-op if T >= length)."""
    t = video.shape[2]
    if t >= length:
        return video
    return video.index_select(2, pingpong_indices(t, length).to(video.device))


def iter_windows(frames, size: int, stride: int):
    """Stream windows from an iterable of frames (..., 3, H, W) without holding the whole video.

    Yields (Window, clip (..., 3, size, H, W), frame_indices (size,)) in the order and with the starts
    of `plan_windows(total, size, stride)`; only the last `size` frames are kept in memory. A
    video shorter than one window is ping-pong padded (frame_indices then repeat frames).
    """
    from collections import deque

    buffer: deque = deque(maxlen=size)
    count, next_start, previous_start, index = 0, 0, None, 0
    for frame in frames:
        buffer.append(frame)
        count += 1
        if count >= size and count - size == next_start:
            start = count - size
            overlap = 0 if previous_start is None else previous_start + size - start
            yield (
                Window(index, start, size, overlap),
                torch.stack(list(buffer), -3),
                torch.arange(start, count),
            )
            previous_start, next_start, index = start, start + stride, index + 1
    if count == 0:
        raise InputError("the video has no frames")
    if count < size:
        order = pingpong_indices(count, size)
        frames_list = list(buffer)
        yield Window(0, 0, size, 0), torch.stack([frames_list[i] for i in order], -3), order
    elif previous_start is not None and previous_start + size < count:
        start = count - size
        yield (
            Window(index, start, size, previous_start + size - start),
            torch.stack(list(buffer), -3),
            torch.arange(start, count),
        )
