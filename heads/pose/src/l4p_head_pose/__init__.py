"""l4p-head-pose: the `pose` head plugin (camera Plücker rays -> poses + intrinsics) for l4p.

- `pose_head_spec()`: the HeadSpec (outputs `rays`, `poses`, `intrinsics`); `PoseConfig`, `PoseHead`.
- `PoseStitcher`: chains windowed poses through the overlap (streaming).
- `joint_windowed` / `joint_depth_pose_alignment` / `JointDepthPoseAligner`: the explicit joint
  depth + pose alignment composite (robust Sim(3) on overlap point maps).
- `save_pose_outputs`: TUM trajectory + intrinsics JSON; `official_key_map`: official `camray` weights.
"""

__version__ = "0.1.0"

from .composite import (  # noqa: E402  (the spec reads __version__)
    JointDepthPoseAligner,
    JointResult,
    flatten_poses,
    joint_depth_pose_alignment,
    joint_windowed,
)
from .head import (  # noqa: E402
    OFFICIAL_MODULE,
    PoseConfig,
    PoseHead,
    PoseStitcher,
    chain_step,
    first_frame_depth_scale,
    official_key_map,
    pose_head_metrics,
    pose_head_spec,
    pose_loss,
    ray_targets,
    save_pose_outputs,
    solve_rays,
    visualize_pose,
)

__all__ = [
    "OFFICIAL_MODULE",
    "JointDepthPoseAligner",
    "JointResult",
    "PoseConfig",
    "PoseHead",
    "PoseStitcher",
    "__version__",
    "chain_step",
    "first_frame_depth_scale",
    "flatten_poses",
    "joint_depth_pose_alignment",
    "joint_windowed",
    "official_key_map",
    "pose_head_metrics",
    "pose_head_spec",
    "pose_loss",
    "ray_targets",
    "save_pose_outputs",
    "solve_rays",
    "visualize_pose",
]
