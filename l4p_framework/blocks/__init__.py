"""Reusable decoder building blocks shared by head plugins.

- `DPT3D` / `DPT3DConfig`: the 3D DPT dense decoder (depth, flow, masks, rays).
- `DenseHead` / `DenseHeadConfig`: a DPT3D sized for an encoder, the body of every dense head.
- `TrackingDecoder`, `VideoMaskDecoder`, `TwoWayTransformer`: the SAM-style two-way decoder.
- `RandomFourierPE3D`, `PromptEncoder3D`: 3D positional encoding and point / feature prompts.
- `soft_argmax_2d`, `spatial_mean`: heatmap decoding.
- `matching`: classical frame matching (pyramidal Lucas-Kanade flow, flow chaining into tracks) for
  heads with a `matching` option.
- `keymaps`: official L4P checkpoint key maps for these blocks.
"""

from .dense_head import DenseHead, DenseHeadConfig
from .dpt3d import (
    DPT3D,
    DPT3D_OFFICIAL,
    DPT3D_OFFICIAL_RAYS,
    DPT3D_SMALL,
    DPT3DConfig,
    FeatureFusionBlock3D,
    ResidualConvUnit3D,
    dpt3d_cpu,
    dpt3d_hook_layers,
    dpt3d_official,
    dpt3d_official_rays,
    dpt3d_small,
    make_resampler,
)
from .keymaps import (
    l4p_dense_head_to_official,
    l4p_tracking_head_to_official,
    official_dense_head_to_l4p,
    official_tracking_head_to_l4p,
    strip_prefix,
)
from .prompt import PromptEncoder3D, RandomFourierPE3D
from .softargmax import soft_argmax_2d, spatial_mean
from .two_way import (
    Attention,
    LayerNorm3d,
    TrackingDecoder,
    TrackingWindowOutput,
    TwoWayAttentionBlock,
    TwoWayTransformer,
    VideoMaskDecoder,
)

__all__ = [
    "DenseHead",
    "DenseHeadConfig",
    "dpt3d_cpu",
    "DPT3D",
    "DPT3D_OFFICIAL",
    "DPT3D_OFFICIAL_RAYS",
    "DPT3D_SMALL",
    "Attention",
    "DPT3DConfig",
    "FeatureFusionBlock3D",
    "LayerNorm3d",
    "PromptEncoder3D",
    "RandomFourierPE3D",
    "ResidualConvUnit3D",
    "TrackingDecoder",
    "TrackingWindowOutput",
    "TwoWayAttentionBlock",
    "TwoWayTransformer",
    "VideoMaskDecoder",
    "dpt3d_hook_layers",
    "dpt3d_official",
    "dpt3d_official_rays",
    "dpt3d_small",
    "l4p_dense_head_to_official",
    "l4p_tracking_head_to_official",
    "make_resampler",
    "official_dense_head_to_l4p",
    "official_tracking_head_to_l4p",
    "soft_argmax_2d",
    "spatial_mean",
    "strip_prefix",
]
