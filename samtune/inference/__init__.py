"""Inference: tuned models as official SAM 2 predictors, prompt files and folder prediction."""
