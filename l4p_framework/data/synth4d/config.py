"""Configuration of the procedural synth4d generator."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Synth4DConfig(BaseModel):
    """Size and randomisation ranges of one synth4d clip.

    Lengths are in scene units (think metres), speeds in scene units (or radians) per frame, angles
    in degrees. The room is closed, so every pixel has a valid depth. The defaults render today's
    procedural clips bit for bit; `textures`, `camera_effects` and `camera_motion` opt into photo
    textures, real-camera artefacts and forward/backward camera motion.
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
    camera_motion: Literal["pan", "mixed", "dolly"] = Field(
        "pan",
        description=(
            "camera path: 'pan' = smooth sway looking at a drifting target (the original clips); "
            "'dolly' adds a steady forward or backward travel along the view direction; 'mixed' = "
            "dolly in about half of the clips, pan in the others"
        ),
    )
    fov_range_deg: tuple[float, float] = Field((45.0, 80.0), description="horizontal field of view range")
    query_first_frame_fraction: float = Field(0.7, ge=0.0, le=1.0, description="queries placed at frame 0")
    moving_query_fraction: float = Field(0.3, ge=0.0, le=1.0, description="queries aimed at moving objects")
    textures: str | None = Field(
        None,
        description=(
            "folder of photographs (.jpg/.jpeg/.png/.webp, searched recursively) used as textures of "
            "the room faces and objects; None = procedural textures only. scripts/fetch_photos.py "
            "makes one (OUT/photos)"
        ),
    )
    photo_split: str | None = Field(
        None,
        description=(
            'JSON file {"train": [...], "val": [...], "test": [...]} of photo paths relative to '
            "`textures`: each split renders only its own photos (e.g. data/photos/split.json); "
            "None = every split uses every photo of the folder"
        ),
    )
    texture_mix: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="with textures: chance that a material shows a photo, else its procedural pattern",
    )
    camera_effects: bool = Field(
        False,
        description=(
            "apply real-camera effects to the video only (labels untouched): motion blur along the "
            "camera's image motion, slight defocus, exposure and white-balance drift, sensor noise, "
            "JPEG artefacts"
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Synth4DConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects {self.min_objects} exceeds max_objects {self.max_objects}")
        lo, hi = self.fov_range_deg
        if not 1.0 <= lo <= hi <= 150.0:
            raise ValueError(f"fov_range_deg {self.fov_range_deg} must satisfy 1 <= low <= high <= 150")
        if self.photo_split is not None and self.textures is None:
            raise ValueError("photo_split needs textures (the folder its paths are relative to)")
        return self
