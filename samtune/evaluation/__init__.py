"""Evaluation: fixed protocols (point1, box, clicks), results, reports and comparisons."""

from samtune.evaluation.clicks import center_points, error_center_clicks
from samtune.evaluation.evaluator import PROTOCOLS, Evaluator
from samtune.evaluation.results import EvalResult, ObjectResult

__all__ = [
    "PROTOCOLS",
    "EvalResult",
    "Evaluator",
    "ObjectResult",
    "center_points",
    "error_center_clicks",
]
