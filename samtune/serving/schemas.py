"""Request bodies of Roboflow's SAM 2 routes (``/sam2/embed_image``, ``/sam2/segment_image``).

Field names and defaults follow Roboflow's API so that ``inference-sdk`` and scripts written
for it work unchanged. Unknown fields (``model_id``, usage tags the client adds) are accepted
and ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_IMAGE_ID_LENGTH = 256


class ImageRef(BaseModel):
    """An image in the request: ``{"type": "base64", "value": "<base64 of the file bytes>"}``;
    also ``url`` (when the server allows it) and ``numpy`` (base64 of a pickled array or .npy)."""

    model_config = ConfigDict(extra="allow")

    type: str = "base64"
    value: Any = None


class Point(BaseModel):
    """A click in image pixels; ``positive`` false marks background."""

    model_config = ConfigDict(allow_inf_nan=False)

    x: float
    y: float
    positive: bool = True


class Box(BaseModel):
    """A box in image pixels given by its centre ``x, y`` and its ``width, height``."""

    model_config = ConfigDict(allow_inf_nan=False)

    x: float
    y: float
    width: float
    height: float


class Prompt(BaseModel):
    """The prompt of one object: a box, points, or both."""

    box: Box | None = None
    points: list[Point] | None = None


class PromptSet(BaseModel):
    """The prompts of one request; one prediction comes back per prompt."""

    prompts: list[Prompt] | None = None


class Sam2Request(BaseModel):
    """Fields every SAM 2 route takes."""

    model_config = ConfigDict(extra="allow")

    api_key: str | None = None
    sam2_version_id: str | None = None


class EmbedRequest(Sam2Request):
    """``POST /sam2/embed_image``: compute and cache the image embedding."""

    image: ImageRef | None = None
    image_id: str | None = Field(default=None, min_length=1, max_length=MAX_IMAGE_ID_LENGTH)


class SegmentRequest(Sam2Request):
    """``POST /sam2/segment_image``: masks for prompts, from a cached or a fresh embedding."""

    image: ImageRef | None = None
    image_id: str | None = Field(default=None, min_length=1, max_length=MAX_IMAGE_ID_LENGTH)
    prompts: PromptSet = Field(default_factory=PromptSet)
    multimask_output: bool = True
    format: str = "json"
    mask_input: Any = (
        None  # N x h x w logits (json), or base64 .npy/.npz (mask_input_format binary)
    )
    mask_input_format: str | None = "json"
    save_logits_to_cache: bool = False  # keep this answer's low-res logits (Roboflow's SAM 2 name)
    load_logits_from_cache: bool = False  # feed back those of an earlier, contained prompt set
    use_mask_input_cache: bool | None = False  # SAM 1's name for load_logits_from_cache

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompt_forms(cls, value: Any) -> Any:
        """Accept ``{"prompts": [...]}``, a plain list of prompts, or a single prompt."""
        if value is None:
            return {"prompts": None}
        if isinstance(value, list):
            return {"prompts": value}
        if isinstance(value, dict) and "prompts" not in value and ({"box", "points"} & set(value)):
            return {"prompts": [value]}
        return value
