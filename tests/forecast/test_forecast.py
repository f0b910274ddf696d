"""Forecasting protocol: splits and scaling follow the ETT conventions, windows' targets stay in their split,
metrics, the seasonal floor by hand, every model's forward/backward, and the CSV errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from titans.forecast import FORECASTERS, ForecastDataError, build_forecaster, load_csv, make_splits, split_borders
from titans.forecast.run import score


def _csv(tmp_path, n=400, freq="h", gap_at=None, bad_value_at=None, date_name="date"):
    dates = pd.date_range("2020-01-01", periods=n, freq=freq)
    if gap_at is not None:
        dates = dates.delete(gap_at)
    df = pd.DataFrame({date_name: dates, "a": np.sin(np.arange(len(dates)) / 5.0),
                       "b": np.arange(len(dates), dtype=float)})
    if bad_value_at is not None:
        df["a"] = df["a"].astype(object)
        df.loc[bad_value_at, "a"] = "n/a"
    path = tmp_path / "series.csv"
    df.to_csv(path, index=False)
    return str(path)


def test_ratio_borders_follow_the_reference_loader():
    n, L = 1000, 96
    (a0, b0), (a1, b1), (a2, b2) = split_borders(n, L, "ratio")
    assert (a0, b0) == (0, 700)
    assert (a1, b1) == (700 - L, 800)  # lookback reaches back, targets start at 700
    assert (a2, b2) == (800 - L, 1000)


def test_ett_hour_borders():
    n = 20 * 30 * 24
    (a0, b0), (a1, b1), (a2, b2) = split_borders(n, 96, "ett_hour")
    assert (b0, b1, b2) == (8640, 8640 + 2880, 8640 + 5760) and a1 == 8640 - 96


def test_targets_stay_in_their_split_and_scaling_sees_train_only():
    n, L, H = 1000, 96, 24
    values = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 2))
    s = make_splits(values, ["a", "b"], lookback=L, horizon=H)
    for split, (lo, hi) in zip(("train", "val", "test"), ((0, 700), (700, 800), (800, 1000))):
        x, y = s.windows(split)
        raw_y = y[..., 0] * s.std[0] + s.mean[0]
        assert raw_y.min() >= lo - 1e-3 and raw_y.max() <= hi - 1 + 1e-3, split
        assert np.allclose(x[:, 1:, 0] - x[:, :-1, 0], 1 / s.std[0], atol=1e-4)  # consecutive steps
    assert np.allclose(s.mean, 349.5)  # mean of rows 0..699 only
    changed = values.copy()
    changed[700:] *= 100.0  # val/test values never enter the statistics
    s2 = make_splits(changed, ["a", "b"], lookback=L, horizon=H)
    assert np.allclose(s2.mean, s.mean) and np.allclose(s2.std, s.std)


def test_truth_scores_zero():
    class Oracle(torch.nn.Module):
        def __init__(self, y):
            super().__init__()
            self.y, self.i = torch.from_numpy(y), 0

        def forward(self, x):
            out = self.y[self.i:self.i + len(x)]
            self.i += len(x)
            return out

    x = np.random.rand(10, 8, 2).astype(np.float32)
    y = np.random.rand(10, 4, 2).astype(np.float32)
    assert score(Oracle(y), x, y, batch=3) == {"mse": 0.0, "mae": 0.0}


def test_seasonal_naive_by_hand():
    m = build_forecaster("seasonal_naive", 6, 5, 1, period=3)
    x = torch.tensor([[1.0, 2, 3, 4, 5, 6]])[..., None]
    assert m(x)[0, :, 0].tolist() == [4.0, 5.0, 6.0, 4.0, 5.0]


@pytest.mark.parametrize("name", sorted(FORECASTERS))
def test_every_model_forward_backward(name):
    torch.manual_seed(0)
    m = build_forecaster(name, 96, 24, 3, **({"period": 24} if name == "seasonal_naive" else {}))
    x = torch.randn(4, 96, 3)
    y = m(x)
    assert y.shape == (4, 24, 3) and torch.isfinite(y).all()
    if any(p.requires_grad for p in m.parameters()):
        y.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)


def test_memory_forecaster_is_causal_over_patches():
    torch.manual_seed(0)
    m = build_forecaster("lmm", 96, 24, 1)
    z = torch.randn(2, 12, 64)
    base = m.mems[0](z)[0]
    z2 = z.clone()
    z2[:, 7] += 1
    assert torch.equal(m.mems[0](z2)[0][:, :7], base[:, :7])


def test_load_csv_reads_dates_and_values(tmp_path):
    dates, values, cols = load_csv(_csv(tmp_path))
    assert values.shape == (400, 2) and cols == ["a", "b"] and len(dates) == 400


@pytest.mark.parametrize("kw,match", [({"date_name": "when"}, "no date column"), ({"gap_at": 50}, "gap"),
                                      ({"bad_value_at": 10}, "non-numeric")])
def test_bad_csvs_are_named(tmp_path, kw, match):
    with pytest.raises(ForecastDataError, match=match):
        load_csv(_csv(tmp_path, **kw))


def test_too_few_rows_is_an_error(tmp_path):
    _, values, cols = load_csv(_csv(tmp_path, n=150))
    with pytest.raises(ForecastDataError, match="too few"):
        make_splits(values, cols, lookback=96, horizon=96)


def test_report_tables_every_result(tmp_path):
    import json

    from titans.forecast.run import report

    for h, m, mse in ((96, "dlinear", 0.2), (192, "dlinear", 0.4), (96, "lmm", 0.1)):
        with open(tmp_path / f"x_{h}_{m}.json", "w") as f:
            json.dump({"data": "x", "horizon": h, "model": m, "test_mse": mse, "test_mae": mse / 2}, f)
    table = report(str(tmp_path))
    assert "| x | 96 | 0.100 / 0.050 | 0.200 / 0.100 |" in table
    assert "| x | avg | n/a | 0.300 / 0.150 |" in table


def test_ett_files_get_the_ett_split_by_name():
    from titans.forecast.run import default_protocol

    assert default_protocol("/data/ETTh1.csv") == "ett_hour"
    assert default_protocol("ETTm2.csv") == "ett_minute"
    assert default_protocol("weather.csv") == "ratio" and default_protocol("vic_elec") == "ratio"


@pytest.mark.parametrize("name", ["dlinear", "seasonal_naive"])
def test_run_end_to_end(tmp_path, name):
    from titans.forecast.run import run

    res = run(_csv(tmp_path), 24, name, lookback=48, epochs=2, batch=16, log=lambda *_: None, device="cpu")
    assert res["device"] == "cpu" and res["test_mse"] >= 0 and res["horizon"] == 24
    assert np.asarray(res["examples"]["pred"]).shape == (3, 24, 2)


def test_a_bad_device_fails_before_reading_data(tmp_path):
    from titans.forecast.run import main, run

    with pytest.raises(ValueError, match="device='gpu0': not a device"):
        run(str(tmp_path / "missing.csv"), 24, "dlinear", device="gpu0")
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "missing.csv"), "--device", "gpu0", "--out", str(tmp_path / "o")])


def test_unknown_data_names_the_flag_before_any_work(tmp_path, capsys):
    from titans.forecast.run import main

    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert "--data" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_all_refuses_finished_runs_of_other_settings(tmp_path, capsys):
    """--all skips finished runs: one made with other settings is an error before any work, not reused."""
    import json

    from titans.forecast.run import main

    with open(tmp_path / "vic_elec_96_lmm.json", "w") as f:
        json.dump({"data": "vic_elec", "horizon": 96, "model": "lmm", "lookback": 96, "seed": 0, "max_epochs": 10,
                   "max_train_windows": None, "test_mse": 0.1, "test_mae": 0.1}, f)
    with pytest.raises(SystemExit):
        main(["--all", "--epochs", "3", "--out", str(tmp_path)])
    assert "was run with {'max_epochs': 10}, not {'max_epochs': 3}" in capsys.readouterr().err
