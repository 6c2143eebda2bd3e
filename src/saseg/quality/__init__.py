"""Frame quality without labels: per-class quality features and a model fitted on a pilot,
learned by any backend of `REGRESSORS` (`register_regressor` adds one)."""

from .model import QualityModel, grouped_folds
from .regressors import REGRESSORS, QualityRegressor, make_regressor, register_regressor, unregister_regressor

__all__ = ["QualityModel", "grouped_folds", "REGRESSORS", "QualityRegressor", "make_regressor",
           "register_regressor", "unregister_regressor"]
