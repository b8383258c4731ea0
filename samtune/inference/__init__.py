"""Inference: tuned models as official SAM 2 predictors, prompt files and folder prediction.

``predictor`` loads a model into sam2's image and video predictors, ``prompt_files`` reads and
checks a prompts file, ``folder`` predicts one mask per prompted object of a folder (what
``samtune-predict`` does), ``auto`` runs sam2's automatic mask generator over a folder, and
``mask_files`` writes the masks (PNG per object, COCO ``masks.json``). For clips:
``clip_prompts`` reads prompts on a frame, ``video`` propagates them through
``SAM2VideoPredictor`` (``samtune-predict video=``), ``clip_files`` reads the video or volume and
writes palette PNGs or a label volume on the input's grid.
"""

from samtune.inference.auto import predict_automatic
from samtune.inference.clip_prompts import FramePrompts, read_clip_prompts
from samtune.inference.folder import predict_folder, run_predict
from samtune.inference.predictor import load_predictor, load_video_predictor
from samtune.inference.prompt_files import ObjectPrompt, PromptError, read_prompts
from samtune.inference.video import predict_clip, run_predict_video

__all__ = [
    "FramePrompts",
    "ObjectPrompt",
    "PromptError",
    "load_predictor",
    "load_video_predictor",
    "predict_automatic",
    "predict_clip",
    "predict_folder",
    "read_clip_prompts",
    "read_prompts",
    "run_predict",
    "run_predict_video",
]
