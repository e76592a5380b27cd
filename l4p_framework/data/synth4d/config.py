"""Configuration of the procedural synth4d generator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Synth4DConfig(BaseModel):
    """Size and randomisation ranges of one synth4d clip.

    Lengths are in scene units (think metres), speeds in scene units (or radians) per frame, angles
    in degrees. The room is closed, so every pixel has a valid depth.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int = Field(16, ge=2, description="frames T per clip")
    height: int = Field(128, ge=8, description="image height H in pixels")
    width: int = Field(128, ge=8, description="image width W in pixels")
    num_queries: int = Field(64, ge=0, description="query points N per clip")
    min_objects: int = Field(2, ge=0, le=16, description="fewest rigid objects per clip")
    max_objects: int = Field(6, ge=0, le=16, description="most rigid objects per clip")
    static_object_prob: float = Field(
        0.3, ge=0.0, le=1.0, description="chance that an object (other than one forced mover) is static"
    )
    max_object_speed: float = Field(0.18, ge=0.0, le=1.0, description="largest object speed, units/frame")
    max_object_spin: float = Field(0.15, ge=0.0, le=1.0, description="largest object spin, rad/frame")
    camera_motion_scale: float = Field(1.0, ge=0.0, le=3.0, description="multiplies camera motion")
    fov_range_deg: tuple[float, float] = Field((45.0, 80.0), description="horizontal field of view range")
    query_first_frame_fraction: float = Field(0.7, ge=0.0, le=1.0, description="queries placed at frame 0")
    moving_query_fraction: float = Field(0.3, ge=0.0, le=1.0, description="queries aimed at moving objects")

    @model_validator(mode="after")
    def _check(self) -> Synth4DConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects {self.min_objects} exceeds max_objects {self.max_objects}")
        lo, hi = self.fov_range_deg
        if not 1.0 <= lo <= hi <= 150.0:
            raise ValueError(f"fov_range_deg {self.fov_range_deg} must satisfy 1 <= low <= high <= 150")
        return self
