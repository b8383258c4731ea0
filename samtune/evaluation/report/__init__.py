"""Evaluation reports: results on disk, Markdown/HTML rendering, plots, galleries, comparisons
and W&B logging."""
