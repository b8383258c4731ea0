"""Prompts files: every bad object is reported with its image, its index and the problem."""

from __future__ import annotations

import json

import pytest

from samtune.inference.prompt_files import PromptError, read_prompts
from tests.inference.helpers import write_images

BAD_PROMPTS = [
    (
        {"a.png": [{"points": [[130, 5]], "labels": [1]}]},
        r"image 'a.png', object 0: point \(130, 5\) is outside",
    ),
    (
        {"a.png": [{"box": [5, 5, 60, 60]}, {"box": [50, 10, 20, 40]}]},
        r"image 'a.png', object 1: box .* x2 > x1",
    ),
    (
        {"a.png": [{"points": [[5, 5], [6, 6]], "labels": [1]}]},
        r"image 'a.png', object 0: 2 points but labels",
    ),
    (
        {"missing.png": [{"box": [1, 1, 5, 5]}]},
        r"image 'missing.png' is listed but .* does not exist",
    ),
    ({"a.png": [{"boxes": [1, 1, 5, 5]}]}, r"image 'a.png', object 0: unknown keys \['boxes'\]"),
    (
        {"a.png": [{"points": [[5, 5]], "labels": [2]}]},
        r"image 'a.png', object 0: labels must be 1 .* or 0",
    ),
    ({"a.png": []}, r"image 'a.png' needs a non-empty list"),
]


@pytest.mark.parametrize(("prompts", "message"), BAD_PROMPTS)
def test_bad_prompts_name_image_and_problem(tmp_path, prompts, message):
    write_images(tmp_path / "images")
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    with pytest.raises(PromptError, match=message):
        read_prompts(tmp_path / "prompts.json", tmp_path / "images")
