"""Readers for public dataset formats, each registered as a `DatasetSpec` (see `reader_specs`).

One module per format; each offers low-level functions returning numpy arrays in the file's own
units (e.g. `sintel.read_flo`, `kitti.read_kitti_flow_png`) and a torch Dataset whose items
are l4p samples (keys and conventions of `l4p_framework.batch`: z-depth, backward flow where the
data has it, camera-to-world poses, pixel coordinates with the top-left corner at (0, 0)).

Every dataset is built as ``spec.build(split, root=PATH, **options)``; options shared by all
(start, frame_stride, max_frames, clip_len, clip_stride, size, resize_mode) are documented in
`_common.SequenceDataset`. Bad files raise `DataError` naming the file and the problem; bad
arguments raise `InputError`.

Extra, non-canonical sample key: ``flow_forward_valid`` (1, T, H, W) bool, next to
``flow_forward`` for data whose ground truth is forward flow (Sintel, KITTI).
"""

from __future__ import annotations

from ...specs import DatasetSpec


def reader_specs() -> list[DatasetSpec]:
    """DatasetSpecs of every built-in reader: tapvid, tapvid3d, sintel, kitti-depth, kitti-flow,
    pointodyssey, davis, tum, kubric."""
    from . import davis, kitti, kubric, pointodyssey, sintel, tapvid, tapvid3d, tum

    return [
        tapvid.spec(),
        tapvid3d.spec(),
        sintel.spec(),
        *kitti.specs(),
        pointodyssey.spec(),
        davis.spec(),
        tum.spec(),
        kubric.spec(),
    ]


__all__ = ["reader_specs"]
