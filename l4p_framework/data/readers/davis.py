"""DAVIS 2016/2017 video object segmentation: frames and object masks.

Layout::

    <root>/JPEGImages/<resolution>/<seq>/%05d.jpg
    <root>/Annotations/<resolution>/<seq>/%05d.png     palette PNG, pixel = object id, 0 = background
    <root>/ImageSets/<year>/{train,val,...}.txt        sequence names (optional)

DAVIS 2016 masks (a single object, stored 0/255 or 0/1) read as ids {0, 1}.

Conversion to l4p: ``motion_mask`` (1, T, H, W) float = (object id > 0). The annotated objects
are DAVIS's salient moving objects, so this is an approximate motion mask (L4P itself uses the
masks to sample query points). motion_mask is present only when every frame of the clip has an
annotation (test-dev and challenge splits only annotate frame 0). With num_queries > 0 the
sample also carries ``queries`` (N, 3): pixel centres (x + 0.5, y + 0.5) drawn at random on
mask > 0 of the clip's first frame (everywhere if that frame has no object), t = 0.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import batch as K
from ...errors import InputError
from ...specs import DatasetSpec
from ._common import (
    SequenceDataset,
    check_png,
    check_size,
    check_split,
    data_error,
    dense_tensor,
    list_dirs,
    list_files,
    read_bytes,
    read_rgb,
    require_dir,
    video_tensor,
)

SPLITS = ("train", "val", "test-dev", "test-challenge")
PROVIDES = (K.VIDEO, K.MOTION_MASK)


def read_davis_mask(path: str | Path) -> np.ndarray:
    """DAVIS annotation PNG -> uint8 [H, W] object ids (0 = background).

    Palette ('P') PNGs give their palette indices; greyscale or 1-bit masks (DAVIS 2016) give
    1 where the value is non-zero. Any other image mode is a DataError.
    """
    from PIL import Image

    p = Path(path)
    data = read_bytes(p)
    check_png(p, data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode, arr = im.mode, np.asarray(im)
    except Exception as e:
        raise data_error(
            p, f"truncated or corrupt PNG ({type(e).__name__}: {e})", "re-extract DAVIS"
        ) from None
    if mode == "P":
        return arr.astype(np.uint8)
    if mode in ("L", "1"):
        return (arr > 0).astype(np.uint8)
    raise data_error(
        p,
        f"PIL mode {mode!r} is not a palette-indexed or greyscale mask",
        "use the original DAVIS Annotations PNGs",
    )


class DavisDataset(SequenceDataset):
    """DAVIS clips with object masks.

    Options: year ("2017"), resolution ("480p" | "Full-Resolution"), num_queries (0), seed
    (0), clip/resize options. When ImageSets/<year>/<split>.txt is missing, every sequence of
    JPEGImages/<resolution>/ is used. Samples: video, [motion_mask], [queries], name.
    """

    dataset_name = "davis"

    def __init__(
        self,
        split: str = "val",
        *,
        root: str | Path | None = None,
        year: str = "2017",
        resolution: str = "480p",
        num_queries: int = 0,
        seed: int = 0,
        **options: Any,
    ):
        check_split(self.dataset_name, split, SPLITS)
        if num_queries < 0:
            raise InputError(f"num_queries must be >= 0, got {num_queries}")
        super().__init__(**options)
        base = require_dir(self.dataset_name, root)
        img_root = base / "JPEGImages" / resolution
        if not img_root.is_dir():
            raise data_error(img_root, "folder not found", f"root must hold JPEGImages/{resolution}/<seq>/")
        listing = base / "ImageSets" / str(year) / f"{split}.txt"
        if listing.is_file():
            names = [ln.strip() for ln in read_bytes(listing).decode().splitlines() if ln.strip()]
            missing = [n for n in names if not (img_root / n).is_dir()]
            if missing:
                raise data_error(
                    listing,
                    f"lists sequences without frames: {', '.join(missing[:5])}",
                    f"extract them into {img_root}",
                )
        else:
            names = [d.name for d in list_dirs(img_root)]
        self.img_dirs = [img_root / n for n in names]
        self.ann_dirs = [base / "Annotations" / resolution / n for n in names]
        self.frame_files = [list_files(d, (".jpg", ".jpeg", ".png")) for d in self.img_dirs]
        for d, f in zip(self.img_dirs, self.frame_files):
            if not f:
                raise data_error(d, "sequence folder holds no frames", "re-extract DAVIS")
        self.num_queries, self.seed = int(num_queries), int(seed)
        self._index(names, [len(f) for f in self.frame_files])

    def load(self, seq: int, frames: np.ndarray) -> dict[str, Any]:
        files = [self.frame_files[seq][i] for i in frames]
        rgb = np.stack([read_rgb(f) for f in files])
        H, W = rgb.shape[1:3]
        sample: dict[str, Any] = {K.VIDEO: video_tensor(rgb)}
        ann = [self.ann_dirs[seq] / f"{f.stem}.png" for f in files]
        masks = None
        if all(a.is_file() for a in ann):
            masks = np.stack([check_size(a, read_davis_mask(a), H, W, "mask") for a in ann])
            sample[K.MOTION_MASK] = dense_tensor(masks > 0)
        if self.num_queries:
            rng = np.random.default_rng(self.seed * 1_000_003 + seq * 7919 + int(frames[0]))
            if masks is not None:
                first = masks[0] > 0
            elif ann[0].is_file():  # test splits annotate only the first frame
                first = check_size(ann[0], read_davis_mask(ann[0]), H, W, "mask") > 0
            else:
                first = np.zeros((H, W), bool)
            ys, xs = np.nonzero(first) if first.any() else np.nonzero(np.ones((H, W), bool))
            pick = rng.choice(len(xs), size=self.num_queries, replace=len(xs) < self.num_queries)
            q = np.stack([np.zeros(self.num_queries), xs[pick] + 0.5, ys[pick] + 0.5], 1)
            sample[K.QUERIES] = torch.from_numpy(q).float()
        return sample


def spec() -> DatasetSpec:
    return DatasetSpec(
        name="davis",
        build=lambda split="val", **options: DavisDataset(split, **options),
        provides=PROVIDES,
        splits=SPLITS,
        description="DAVIS 2016/2017 frames and object masks (motion_mask = id > 0)",
    )
