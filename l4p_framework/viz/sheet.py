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
    """Write frames as an animated GIF, all of one size.

    frames: (T, H, W, 3) uint8, a list of images, or any iterable of images (e.g. a generator:
    frames are then converted one at a time and only their palette versions are kept).
    fps: frames per second (each frame lasts round(1000 / fps) ms); loop: 0 repeats forever.
    Creates parent folders. Colours are quantised to GIF's 256-colour palettes.
    """
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}")
    if isinstance(frames, list | tuple | np.ndarray) or hasattr(frames, "detach"):
        frames = _frames(frames, "frames")
    stream = (_as_rgb(f, f"frames[{i}]") for i, f in enumerate(frames))
    first = next(stream, None)
    if first is None:
        raise InputError("save_gif needs at least one frame")

    def rest():
        for f in stream:
            if f.shape != first.shape:
                raise InputError(f"save_gif needs frames of one size, got {f.shape} after {first.shape}")
            yield Image.fromarray(f)

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(first).save(
        p, format="GIF", save_all=True, append_images=rest(), duration=int(round(1000.0 / fps)), loop=loop
    )
    return p


# ----------------------------------------------------------------------------------------------
# Captioned panels: a readable caption bar above each image, never cut off (text wraps).

CAPTION_FONT_SIZE = 16
CAPTION_BACKGROUND = (32, 32, 32)
CAPTION_COLOR = (255, 255, 255)
TITLE_BACKGROUND = (20, 60, 120)  # row titles ("frame 5 ...") stand out from panel captions
PANEL_GAP = 4  # pixels between panels and between rows


def caption_font(size: int = CAPTION_FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (Pillow >= 10.1 with FreeType); the small bitmap font otherwise."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def _line_height(font) -> int:
    top, bottom = font.getbbox("Ag[]|")[1::2]
    return int(bottom - min(top, 0)) + 4


def wrap_caption(text: str, width: int, font=None) -> list[str]:
    """`text` broken into lines of at most `width` px (at word boundaries, inside over-long words)."""
    font = font or caption_font()
    lines: list[str] = []
    for word in text.split() or [""]:
        line = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(line) <= width:
            lines[-1] = line
            continue
        while font.getlength(word) > width and len(word) > 1:  # hard-break a word wider than the panel
            cut = len(word) - 1
            while cut > 1 and font.getlength(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines


def caption_height(captions: Sequence[str], width: int, font=None) -> int:
    """Height (px, even) of a caption bar that holds the longest of `captions`, wrapped to `width` px."""
    font = font or caption_font()
    lines = max((len(wrap_caption(c, width - 8, font)) for c in captions), default=1)
    height = lines * _line_height(font) + 6
    return height + height % 2


def caption_bar(
    text: str,
    width: int,
    height: int | None = None,
    font=None,
    background: tuple[int, int, int] = CAPTION_BACKGROUND,
) -> np.ndarray:
    """A bar (height, width, 3) uint8 with `text` in white on `background`, wrapped to fit.

    height: None = just enough for the text (`caption_height`); a height too small for the
    wrapped text raises InputError, so a caption is never cut off.
    """
    font = font or caption_font()
    lines = wrap_caption(text, width - 8, font)
    needed = caption_height([text], width, font)
    height = needed if height is None else height
    if height < needed:
        raise InputError(f"caption {text!r} needs a bar of {needed} px at width {width}, got {height}")
    img = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    step = _line_height(font)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * step), line, fill=CAPTION_COLOR, font=font)
    return np.asarray(img).copy()


def text_block(lines: Sequence[str], width: int, font=None) -> np.ndarray:
    """Lines of black text on white, each wrapped to `width` px: (H, width, 3) uint8."""
    font = font or caption_font()
    wrapped = [w for line in lines for w in wrap_caption(line, width - 8, font)]
    step = _line_height(font)
    img = Image.new("RGB", (width, len(wrapped) * step + 8), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(wrapped):
        draw.text((4, 4 + i * step), line, fill=(0, 0, 0), font=font)
    return np.asarray(img).copy()


def resize_image(image, size: tuple[int, int], resample: str = "bilinear") -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to size = (H', W'). resample: "bilinear" (antialiased when
    shrinking) or "nearest" (crisp pixels, for small label-like images)."""
    modes = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
    if resample not in modes:
        raise InputError(f"resample must be one of {sorted(modes)}, got {resample!r}")
    img = _as_rgb(image, "image")
    h, w = int(size[0]), int(size[1])
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), modes[resample])).copy()


def panel_size(image_size: tuple[int, int], width: int) -> tuple[int, int]:
    """(H', W') of a panel `width` px wide showing an (H, W) image with its aspect kept; H' even."""
    h, w = image_size
    ph = max(2, int(round(h * width / w / 2.0)) * 2)
    return ph, int(width)


def panel_row(
    panels: Sequence[tuple[str, np.ndarray]],
    gap: int = PANEL_GAP,
    bar_height: int | None = None,
    background: tuple[int, int, int] = CAPTION_BACKGROUND,
) -> np.ndarray:
    """Images side by side, each with its caption in a bar above it.

    panels: (caption, (H_i, W_i, 3) uint8) pairs; images shorter than the tallest are padded
    below. Every bar has one height: `bar_height`, or the tallest any caption needs. Returns
    (bar + max H_i, sum W_i + gap * (n - 1), 3) uint8.
    """
    if not panels:
        raise InputError("panel_row needs at least one panel")
    font = caption_font()
    imgs = [_as_rgb(img, str(cap)) for cap, img in panels]
    if bar_height is None:
        bar_height = max(caption_height([cap], img.shape[1], font) for (cap, _), img in zip(panels, imgs))
    h = max(img.shape[0] for img in imgs)
    width = sum(img.shape[1] for img in imgs) + gap * (len(imgs) - 1)
    row = np.empty((bar_height + h, width, 3), dtype=np.uint8)
    row[:] = np.asarray(background, dtype=np.uint8)
    x = 0
    for (cap, _), img in zip(panels, imgs):
        w = img.shape[1]
        row[:bar_height, x : x + w] = caption_bar(cap, w, bar_height, font)
        row[bar_height : bar_height + img.shape[0], x : x + w] = img
        x += w + gap
    return row


def stack_rows(
    rows: Sequence[np.ndarray],
    gap: int = PANEL_GAP,
    background: tuple[int, int, int] = CAPTION_BACKGROUND,
) -> np.ndarray:
    """Images one above the other, `gap` px apart, left-aligned; narrower ones padded right."""
    if not rows:
        raise InputError("stack_rows needs at least one row")
    imgs = [_as_rgb(r, f"rows[{i}]") for i, r in enumerate(rows)]
    width = max(r.shape[1] for r in imgs)
    height = sum(r.shape[0] for r in imgs) + gap * (len(imgs) - 1)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = np.asarray(background, dtype=np.uint8)
    y = 0
    for r in imgs:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    return out


def titled_row(title: str, row: np.ndarray) -> np.ndarray:
    """A full-width blue title bar with `title` (e.g. "frame 5 (of 0-23)") on top of `row`."""
    r = _as_rgb(row, "row")
    return np.concatenate([caption_bar(title, r.shape[1], background=TITLE_BACKGROUND), r], axis=0)


def even_picks(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over 0 .. num_frames - 1, first and last included
    (all frames when there are fewer): e.g. (24, 6) -> [0, 5, 9, 14, 18, 23]."""
    if num_frames < 1 or count < 1:
        raise InputError(f"need num_frames >= 1 and count >= 1, got {num_frames} and {count}")
    return sorted({int(i) for i in np.linspace(0, num_frames - 1, min(count, num_frames)).round()})
