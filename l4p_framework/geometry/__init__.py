"""Camera geometry: intrinsics, (un)projection, Plücker rays, pose solving, Sim(3) alignment, export.

Conventions (data-and-metrics.md): continuous pixel coordinates with the top-left pixel centre at
(0.5, 0.5); pixel-unit intrinsics in that convention; camera frame x right, y down, z forward;
poses camera-to-world 4x4; depth is z-depth; quaternions (x, y, z, w).
"""

from .camera import (
    denormalize_intrinsics,
    intrinsics_from_opencv,
    intrinsics_to_opencv,
    invert_pose,
    make_intrinsics,
    make_pose,
    matrix_to_quaternion,
    normalize_intrinsics,
    pixel_centers,
    project_points,
    quaternion_to_matrix,
    relative_to_first,
    rescale_intrinsics,
    rotation_angle,
    skew_matrix,
    to_world,
    unproject_depth,
    unproject_tracks,
)
from .export import load_intrinsics_json, load_tum, save_intrinsics_json, save_ply, save_tum
from .rays import camera_directions, plucker_rays, rays_to_lines, split_rays
from .sim3 import (
    ChainResult,
    Sim3Fit,
    align_poses_sim3,
    apply_sim3,
    chain_windows,
    ransac_sim3,
    sim3_to_matrix,
    transform_poses,
    umeyama,
)
from .solve import (
    fit_homography_dlt,
    nearest_point_to_lines,
    procrustes_rotation,
    rays_to_cameras,
    rq_decompose,
)

__all__ = [
    "ChainResult",
    "Sim3Fit",
    "align_poses_sim3",
    "apply_sim3",
    "camera_directions",
    "chain_windows",
    "denormalize_intrinsics",
    "fit_homography_dlt",
    "intrinsics_from_opencv",
    "intrinsics_to_opencv",
    "invert_pose",
    "load_intrinsics_json",
    "load_tum",
    "make_intrinsics",
    "make_pose",
    "matrix_to_quaternion",
    "nearest_point_to_lines",
    "normalize_intrinsics",
    "pixel_centers",
    "plucker_rays",
    "procrustes_rotation",
    "project_points",
    "quaternion_to_matrix",
    "ransac_sim3",
    "rays_to_cameras",
    "rays_to_lines",
    "relative_to_first",
    "rescale_intrinsics",
    "rotation_angle",
    "rq_decompose",
    "save_intrinsics_json",
    "save_ply",
    "save_tum",
    "sim3_to_matrix",
    "skew_matrix",
    "split_rays",
    "to_world",
    "transform_poses",
    "umeyama",
    "unproject_depth",
    "unproject_tracks",
]
