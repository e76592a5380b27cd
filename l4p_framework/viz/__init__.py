"""Visualisation: colour maps, the optical-flow wheel, track overlays, masks, normals, camera
trajectories and image sheets. Everything returns numpy uint8 RGB images, (H, W, 3) or
(T, H, W, 3), and accepts numpy arrays or torch tensors."""

from __future__ import annotations

from .colormaps import COLORMAPS, apply_colormap, depth_to_color
from .flow_wheel import color_wheel, flow_to_color, flow_wheel_legend
from .overlays import mask_overlay, normals_to_color, trajectory_plot
from .sheet import make_sheet, save_gif, save_png, side_by_side
from .tracks import draw_tracks, track_colors

__all__ = [
    "COLORMAPS",
    "apply_colormap",
    "color_wheel",
    "depth_to_color",
    "draw_tracks",
    "flow_to_color",
    "flow_wheel_legend",
    "make_sheet",
    "mask_overlay",
    "normals_to_color",
    "save_gif",
    "save_png",
    "side_by_side",
    "track_colors",
    "trajectory_plot",
]
