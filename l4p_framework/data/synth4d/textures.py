"""Photographs as synth4d textures: finding them, decoding them once, mip-mapped lookup by uv.

A textures folder holds jpg/jpeg/png/webp photos (searched recursively). `scan_photos` lists the
photos a split may use (a split file gives each split its own photos) and checks their headers;
`load_photo` decodes a photo once per process (data-loader workers each keep their own cache);
`sample_photo_materials` draws per material a photo, a square crop, the crop's size on the surface,
a rotation and a colour jitter; `photo_color` looks a surface point's colour up by its uv with
trilinear mip-mapping, the mip level chosen from the pixel footprint, so minified photos do not
alias. Outside its crop a photo repeats mirrored (no seams).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from ...errors import ConfigError, DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
"""File name endings (any case) of the photos a textures folder is searched for."""
MAX_PHOTO_SIDE = 1024
"""Photos are downscaled once, at decoding, so that their long side is at most this many pixels."""
MAX_TEXTURE_SIDE = 512
"""A material's crop is resampled to a power-of-two square of at most this side (texels)."""
PHOTO_CACHE_SIZE = 64
"""Decoded photos kept per process (at most ~3 MB each as uint8 at MAX_PHOTO_SIDE)."""
SPLITS = ("train", "val", "test")
FIX = "run scripts/fetch_photos.py and pass textures=<its OUT>/photos, or leave textures unset"

_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_INV = torch.linalg.inv(_YIQ)


# ----------------------------------------------------------------------------- finding photos


@functools.lru_cache(maxsize=32)
def scan_photos(folder: str, split_file: str | None = None, split: str | None = None) -> tuple[str, ...]:
    """Paths of the photos of `folder` that `split` may use, sorted; headers checked.

    Without `split_file` every image of the folder (recursive) is used. With it (JSON
    {"train": [...], "val": [...], "test": [...]} of paths relative to `folder`, disjoint), only the
    photos listed under `split`; the other splits' photos are never opened. Raises DataError when
    the folder is missing or holds no image, the split file is unreadable, lists a missing photo or
    a photo under two splits, or a photo's header is unreadable; ConfigError when `split_file` is
    given without `split`. Cached per process (arguments as strings).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"synth4d: textures folder {root} does not exist; {FIX}")
    found = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not found:
        raise DataError(f"synth4d: textures folder {root} holds no .jpg/.jpeg/.png/.webp image; {FIX}")
    names = found if split_file is None else _split_names(Path(split_file).expanduser(), split, root)
    paths = tuple(str(root / name) for name in names)
    for path in paths:
        check_photo_header(path)
    return paths


def _split_names(split_file: Path, split: str | None, root: Path) -> list[str]:
    """The sorted photo names `split_file` lists under `split`, each checked to exist under root."""
    if split not in SPLITS:
        raise ConfigError(
            f"synth4d: photo_split {split_file} needs the split to take photos from (one of "
            f"{', '.join(SPLITS)}, got {split!r}); use Synth4D(split, ...) or generate_clip(..., split=...)"
        )
    form = 'JSON {"train": [...], "val": [...], "test": [...]} of paths relative to the textures folder'
    try:
        table = json.loads(split_file.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"synth4d: photo split file {split_file} is unreadable ({exc}); it must be {form}"
        ) from None
    if not isinstance(table, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) for n in v) for v in table.values()
    ):
        raise DataError(f"synth4d: photo split file {split_file} must be {form}")
    if not table.get(split):
        raise DataError(f"synth4d: photo split file {split_file} lists no photo under {split!r}; add some")
    owner: dict[str, str] = {}
    for name_split, names in table.items():
        for name in names:
            if owner.setdefault(name, name_split) != name_split:
                raise DataError(
                    f"synth4d: photo {name} is listed under both {owner[name]!r} and {name_split!r} in "
                    f"{split_file}; each photo must belong to one split"
                )
    for name in table[split]:
        if not (root / name).is_file():
            raise DataError(
                f"synth4d: photo {root / name} (listed under {split!r} in {split_file}) does not exist; "
                f"re-run scripts/fetch_photos.py or fix the split file"
            )
    return sorted(table[split])


def check_photo_header(path: str) -> None:
    """Raise DataError naming `path` unless PIL recognises its header (cheap: no decoding)."""
    try:
        with Image.open(path) as image:
            if min(image.size) < 1:
                raise ValueError("empty image")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"synth4d: texture photo {path} is not a readable image ({exc}); delete or replace it"
        ) from None


@functools.lru_cache(maxsize=PHOTO_CACHE_SIZE)
def load_photo(path: str) -> torch.Tensor:
    """The photo at `path` as uint8 RGB (3, H, W), long side at most MAX_PHOTO_SIDE; cached per process.

    Raises DataError naming the file when it cannot be decoded (corrupt or truncated).
    """
    try:
        with Image.open(path) as image:
            scale = min(1.0, MAX_PHOTO_SIDE / max(image.size))
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image.draft("RGB", size)  # JPEG: decode at a reduced scale already (>= size)
            rgb = image.convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.LANCZOS)
            array = np.array(rgb, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"synth4d: cannot decode texture photo {path} ({exc}); delete or replace it"
        ) from None
    return rearrange(torch.from_numpy(array), "h w c -> c h w").contiguous()


# ----------------------------------------------------------------------------- per-clip parameters


@dataclass(frozen=True)
class PhotoMaterials:
    """Photo texture parameters of M materials (room faces first, then objects).

    paths: the photos the clip may use. use (M,) bool: the material shows a photo (else its
    procedural texture); photo (M,) long index into paths; crop_side (M,) side of the square crop as
    a fraction of the photo's shorter side; crop_pos (M, 2) the crop's (x, y) offset as a fraction of
    the photo's width (height) minus the crop side; extent (M,) scene units that the crop's side spans on the surface;
    angle (M,) the photo's rotation on the surface, radians; color_matrix (M, 3, 3) and color_offset
    (M, 3): jittered RGB = color_matrix @ rgb + color_offset (brightness, contrast, saturation, hue).
    """

    paths: tuple[str, ...]
    use: torch.Tensor
    photo: torch.Tensor
    crop_side: torch.Tensor
    crop_pos: torch.Tensor
    extent: torch.Tensor
    angle: torch.Tensor
    color_matrix: torch.Tensor
    color_offset: torch.Tensor


def color_jitter(
    brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine colour maps (M, 3, 3) and offsets (M, 3) of per-material jitter factors (M,) each.

    In YIQ: luma y -> 0.5 + contrast * (y - 0.5); chroma (i, q) rotated by `hue` radians and scaled
    by contrast * saturation; then RGB times brightness. Factors 1, 1, 1, 0 give the identity.
    """
    m = brightness.shape[0]
    c, s = torch.cos(hue.double()), torch.sin(hue.double())
    chroma = (contrast * saturation).double()
    d = torch.zeros(m, 3, 3, dtype=torch.float64)
    d[:, 0, 0] = contrast.double()
    d[:, 1, 1], d[:, 1, 2] = chroma * c, -chroma * s
    d[:, 2, 1], d[:, 2, 2] = chroma * s, chroma * c
    b = brightness.double()
    matrix = b[:, None, None] * (_YIQ_INV @ d @ _YIQ)
    luma_shift = torch.zeros(m, 3, dtype=torch.float64)
    luma_shift[:, 0] = 0.5 * (1 - contrast.double())
    offset = b[:, None] * (luma_shift @ _YIQ_INV.T)
    return matrix.float(), offset.float()


def sample_photo_materials(
    g: torch.Generator, paths: tuple[str, ...], num_room: int, obj_radius: torch.Tensor, mix: float
) -> PhotoMaterials:
    """Draw photo parameters for `num_room` room faces then one material per object.

    obj_radius (O,) bounding radii in scene units: an object's crop spans 0.8-3 of its diameters, a
    room face's 1.5-6 units. Each material shows a photo with probability `mix`.
    """
    m = num_room + obj_radius.shape[0]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    def log_uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.exp(uniform(math.log(lo), math.log(hi), *shape))

    use = torch.rand(m, generator=g) < mix
    photo = torch.randint(0, len(paths), (m,), generator=g)
    crop_side = uniform(0.25, 1.0, m)
    crop_pos = torch.rand(m, 2, generator=g)
    room = torch.arange(m) < num_room
    size = torch.cat([torch.ones(num_room), 2 * obj_radius.float()])
    extent = torch.where(room, log_uniform(1.5, 6.0, m), size * log_uniform(0.8, 3.0, m))
    angle = uniform(0.0, 2 * math.pi, m)
    matrix, offset = color_jitter(
        log_uniform(0.7, 1.3, m), uniform(0.75, 1.25, m), uniform(0.6, 1.4, m), uniform(-0.3, 0.3, m)
    )
    return PhotoMaterials(paths, use, photo, crop_side, crop_pos, extent, angle, matrix, offset)


# ----------------------------------------------------------------------------- lookup


def crop_pyramid(photo: torch.Tensor, crop_side: float, crop_pos: tuple[float, float]) -> list[torch.Tensor]:
    """Mip-map of a square crop of `photo` (uint8 (3, H, W)): float [0, 1] levels (3, S, S), S halving.

    The crop (side `crop_side` x the shorter side, placed at `crop_pos` fractions of the slack) is
    resampled to the nearest power-of-two side S0 <= MAX_TEXTURE_SIDE; level l has side S0 / 2^l,
    down to 1 x 1 (the crop's mean colour). Each level is the 2x2 box average of the one above.
    """
    _, h, w = photo.shape
    side = max(1, round(crop_side * min(h, w)))
    x0, y0 = round(crop_pos[0] * (w - side)), round(crop_pos[1] * (h - side))
    crop = photo[:, y0 : y0 + side, x0 : x0 + side].float().div_(255.0)
    s0 = min(MAX_TEXTURE_SIDE, 2 ** round(math.log2(side)))
    if s0 != side:
        crop = F.interpolate(crop[None], size=(s0, s0), mode="bilinear", antialias=True, align_corners=False)
        crop = crop[0]
    levels = [crop]
    while levels[-1].shape[-1] > 1:
        levels.append(F.avg_pool2d(levels[-1][None], 2)[0])
    return levels


def mirror(x: torch.Tensor, side: int) -> torch.Tensor:
    """Mirror-repeat coordinates x (texels) into [0, side]: -1 -> 1, side + 1 -> side - 1, 2 side -> 0."""
    u = torch.remainder(x, 2 * side)
    return torch.where(u > side, 2 * side - u, u)


def sample_mipmap(
    levels: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, level: torch.Tensor
) -> torch.Tensor:
    """Trilinear lookup (3, n) in a mip-map at level-0 texel positions x, y (n,) in [0, S0].

    level (n,) in [0, len(levels) - 1] (fractional: blend of the two nearest levels). Texel centres
    are at +0.5; neighbours beyond the edge repeat the edge texel (the mirror image of the texture).
    """
    flat = torch.cat([lv.reshape(3, -1) for lv in levels], 1)  # (3, sum S_l^2)
    sides = torch.tensor([lv.shape[-1] for lv in levels])
    starts = torch.cumsum(sides * sides, 0) - sides * sides
    top = len(levels) - 1
    l0 = level.floor().long().clamp_(0, top)
    frac = (level - l0).clamp_(0, 1)[None]
    out = _bilinear(flat, starts, sides, l0, x, y).mul_(1 - frac)
    return out.add_(_bilinear(flat, starts, sides, (l0 + 1).clamp_(max=top), x, y).mul_(frac))


def _bilinear(
    flat: torch.Tensor,
    starts: torch.Tensor,
    sides: torch.Tensor,
    lv: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """Bilinear lookup (3, n) at level-0 positions x, y (n,) in levels lv (n,) of a packed mip-map."""
    scale = torch.exp2(-lv.float())
    side, start = sides[lv], starts[lv]
    last = side - 1
    fx, fy = x * scale - 0.5, y * scale - 0.5
    x0, y0 = fx.floor(), fy.floor()
    ax, ay = (fx - x0)[None], (fy - y0)[None]
    x0, y0 = x0.long(), y0.long()
    xs = (torch.minimum(x0.clamp(min=0), last), torch.minimum((x0 + 1).clamp_(min=0), last))
    ys = (torch.minimum(y0.clamp(min=0), last), torch.minimum((y0 + 1).clamp_(min=0), last))

    def texel(xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return flat.index_select(1, start + yi * side + xi)

    top = texel(xs[0], ys[0]).mul_(1 - ax).add_(texel(xs[1], ys[0]).mul_(ax))
    bottom = texel(xs[0], ys[1]).mul_(1 - ax).add_(texel(xs[1], ys[1]).mul_(ax))
    return top.mul_(1 - ay).add_(bottom.mul_(ay))


def photo_color(photos: PhotoMaterials, m: int, uv: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
    """Colour (3, n) in [0, 1] of material m at in-surface coordinates uv (2, n), scene units.

    footprint (n,) is the pixel footprint in scene units per pixel; the mip level is log2 of it over
    the texel size (scene units per level-0 texel), blended between the two nearest levels.
    """
    photo = load_photo(photos.paths[int(photos.photo[m])])
    pos = photos.crop_pos[m]
    levels = crop_pyramid(photo, float(photos.crop_side[m]), (float(pos[0]), float(pos[1])))
    side = levels[0].shape[-1]
    texel = float(photos.extent[m]) / side
    c, s = math.cos(float(photos.angle[m])), math.sin(float(photos.angle[m]))
    x = (c * uv[0] + s * uv[1]) / texel
    y = (c * uv[1] - s * uv[0]) / texel
    level = torch.log2(footprint / texel).clamp_(0, len(levels) - 1)
    rgb = sample_mipmap(levels, mirror(x, side), mirror(y, side), level)
    out = (photos.color_matrix[m] @ rgb).add_(photos.color_offset[m][:, None])
    return out.clamp_(0.0, 1.0)
