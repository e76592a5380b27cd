"""Visualisation: colour maps, the optical-flow wheel, track overlays, masks, normals, camera
trajectories, image sheets, captioned panels and per-head previews of `l4p run` results.
Everything returns numpy uint8 RGB images, (H, W, 3) or (T, H, W, 3), and accepts numpy arrays
or torch tensors."""

from __future__ import annotations

from .colormaps import COLORMAPS, apply_colormap, depth_to_color
from .flow_wheel import color_wheel, flow_to_color, flow_wheel_legend
from .overlays import mask_overlay, normals_to_color, trajectory_plot
from .preview import render_previews
from .sheet import (
    caption_bar,
    even_picks,
    make_sheet,
    panel_row,
    panel_size,
    resize_image,
    save_gif,
    save_png,
    side_by_side,
    stack_rows,
    text_block,
    titled_row,
)
from .tracks import draw_tracks, track_colors

__all__ = [
    "COLORMAPS",
    "apply_colormap",
    "caption_bar",
    "color_wheel",
    "depth_to_color",
    "draw_tracks",
    "even_picks",
    "flow_to_color",
    "flow_wheel_legend",
    "make_sheet",
    "mask_overlay",
    "normals_to_color",
    "panel_row",
    "panel_size",
    "render_previews",
    "resize_image",
    "save_gif",
    "save_png",
    "side_by_side",
    "stack_rows",
    "text_block",
    "titled_row",
    "track_colors",
    "trajectory_plot",
]
