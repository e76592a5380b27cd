"""Contact sheets, side-by-side videos and PNG / GIF writers (PIL only)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from .colormaps import to_numpy


def _as_rgb(x, name: str) -> np.ndarray:
    """(H, W, 3) uint8 from (H, W, 3) / (H, W, 1) / (H, W) uint8, or float in [0, 1] (clipped)."""
    a = to_numpy(x)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise InputError(f"{name} must be an (H, W, 3), (H, W, 1) or (H, W) image, got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{name} must be uint8 or float in [0, 1], got {a.dtype}")
        a = np.clip(np.rint(np.nan_to_num(a.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def _frames(x, name: str) -> list[np.ndarray]:
    """A list of (H, W, 3) uint8 images from one image, a (T, H, W, 3) array or a list of images."""
    if isinstance(x, (list, tuple)):
        return [_as_rgb(f, f"{name}[{i}]") for i, f in enumerate(x)]
    a = to_numpy(x)
    if a.ndim == 4:
        return [_as_rgb(f, f"{name}[{i}]") for i, f in enumerate(a)]
    return [_as_rgb(a, name)]


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    """`text` shortened (with a trailing '~') until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "~", font=font) > width:
        text = text[:-1]
    return text + "~"


def make_sheet(
    images: dict[str, np.ndarray | Sequence[np.ndarray]],
    cols: int | None = None,
    label: bool = True,
    pad: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Lay images out in a grid with a title above each.

    images: name -> one image ((H, W, 3), (H, W, 1) or (H, W); uint8, or float in [0, 1]) or several
    (a list of images or a (T, H, W, 3) array; each is titled "name i"). With cols=None every
    name gets its own row; with an int the cells are filled row-major, `cols` per row. Every cell
    has the size of the largest image (smaller ones sit at its top left), `pad` pixels apart.
    Returns (H', W', 3) uint8.
    """
    if not images:
        raise InputError("make_sheet needs at least one image")
    if cols is not None and cols < 1:
        raise InputError(f"cols must be a positive int or None, got {cols}")
    rows: list[list[tuple[str, np.ndarray]]] = []
    for name, value in images.items():
        frames = _frames(value, str(name))
        titled = (
            [(str(name), frames[0])]
            if len(frames) == 1
            else [(f"{name} {i}", f) for i, f in enumerate(frames)]
        )
        rows.append(titled)
    if cols is not None:
        flat = [cell for row in rows for cell in row]
        rows = [flat[i : i + cols] for i in range(0, len(flat), cols)]
    cells = [cell for row in rows for cell in row]
    if not cells:
        raise InputError("make_sheet got only empty image lists")
    ch = max(img.shape[0] for _, img in cells)
    cw = max(img.shape[1] for _, img in cells)
    font = _font()
    text_h = 0
    if label:
        bbox = font.getbbox("Ag[]")
        text_h = int(bbox[3] - min(bbox[1], 0)) + 3
    ncols = max(len(row) for row in rows)
    width = pad + ncols * (cw + pad)
    height = pad + len(rows) * (text_h + ch + pad)
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (title, img) in enumerate(row):
            x = pad + c * (cw + pad)
            y = pad + r * (text_h + ch + pad)
            if label:
                draw.text((x, y), _fit(title, draw, font, cw), fill=(0, 0, 0), font=font)
            sheet.paste(Image.fromarray(img), (x, y + text_h))
    return np.asarray(sheet).copy()


def side_by_side(videos: dict[str, np.ndarray], label: bool = True, pad: int = 4) -> np.ndarray:
    """Put videos next to each other, frame by frame, each titled with its name.

    videos: name -> (T, H, W, 3) uint8 (or float in [0, 1]); all with the same T, sizes may
    differ. Returns (T, H', W', 3) uint8 (one row of `make_sheet` per frame).
    """
    if not videos:
        raise InputError("side_by_side needs at least one video")
    clips = {name: _frames(v, str(name)) for name, v in videos.items()}
    lengths = {name: len(f) for name, f in clips.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"side_by_side needs videos of equal length, got {lengths}")
    t_len = next(iter(lengths.values()))
    return np.stack(
        [
            make_sheet({n: f[t] for n, f in clips.items()}, cols=len(clips), label=label, pad=pad)
            for t in range(t_len)
        ]
    )


def save_png(path: str | os.PathLike, image) -> Path:
    """Write an (H, W, 3) uint8 image (or float in [0, 1]) as PNG; creates parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_as_rgb(image, "image")).save(p, format="PNG")
    return p


def save_gif(path: str | os.PathLike, frames, fps: float = 8.0, loop: int = 0) -> Path:
    """Write frames ((T, H, W, 3) uint8 or a list of images, all the same size) as an animated GIF.

    fps: frames per second (each frame lasts round(1000 / fps) ms); loop: 0 repeats forever.
    Creates parent folders. Colours are quantised to GIF's 256-colour palettes.
    """
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}")
    imgs = _frames(frames, "frames")
    if len({f.shape for f in imgs}) != 1:
        raise InputError("save_gif needs frames of one size")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pil = [Image.fromarray(f) for f in imgs]
    pil[0].save(
        p, format="GIF", save_all=True, append_images=pil[1:], duration=int(round(1000.0 / fps)), loop=loop
    )
    return p
