"""Long-term time-series forecasting with the neural memory (paper §5.3 / Table 3), on the standard protocol."""

from .data import ForecastDataError, ForecastSplits, load_csv, load_preset, make_splits, split_borders
from .models import FORECASTERS, build_forecaster

__all__ = ["ForecastDataError", "ForecastSplits", "load_csv", "load_preset", "make_splits", "split_borders",
           "FORECASTERS", "build_forecaster"]
