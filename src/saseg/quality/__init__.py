"""Frame quality without labels: per-class quality features and a model fitted on a pilot."""

from .model import QualityModel, grouped_folds

__all__ = ["QualityModel", "grouped_folds"]
