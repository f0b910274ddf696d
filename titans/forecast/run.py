"""``titans forecast``: train a forecaster with early stopping on the validation split, score MSE/MAE on the test
split (standardized scale, as the benchmark does), write JSON; ``--all`` runs the whole table.

    titans forecast --data vic_elec --horizon 96 --model lmm
    titans forecast --data my.csv --date-col date --horizon 192 --model dlinear
    titans forecast --all --out runs/forecast          # datasets x horizons x models; resumable (skips done runs)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from ..atomic import write_json, write_text
from ..device import resolve_device
from ..models import count_params
from ..pyplot import pyplot
from .data import ForecastDataError, load_csv, load_preset, make_splits
from .models import FORECASTERS, build_forecaster

PRESETS = {"vic_elec": 24, "tmy3": 24, "taylor": 48}  # name: seasonal period in steps (daily)
HORIZONS = (96, 192, 336, 720)


def load(data: str, date_col: str | None = None):
    if data in PRESETS:
        values, cols = load_preset(data)
        return values, cols, PRESETS[data]
    _, values, cols = load_csv(data, date_col)
    return values, cols, 24


def _batches(x, y, batch, shuffle, g, device="cpu"):
    order = torch.randperm(len(x), generator=g) if shuffle else torch.arange(len(x))
    for i in range(0, len(x), batch):
        j = order[i:i + batch]
        yield torch.from_numpy(x[j.numpy()]).to(device), torch.from_numpy(y[j.numpy()]).to(device)


@torch.no_grad()
def score(model, x, y, batch=256, device="cpu"):
    """``{"mse", "mae"}`` over all windows (means over every target value); the model runs on ``device``."""
    model.eval()
    se = ae = n = 0.0
    for xb, yb in _batches(x, y, batch, False, None, device):
        p = model(xb)
        se += float((p - yb).pow(2).sum())
        ae += float((p - yb).abs().sum())
        n += yb.numel()
    return {"mse": se / n, "mae": ae / n}


def default_protocol(data: str) -> str:
    """The reference split for a file: ETT-hour / ETT-minute by name (``ETTh1.csv``, ``ETTm2.csv``), else 7:1:2."""
    name = os.path.basename(data)
    return "ett_hour" if name.startswith("ETTh") else "ett_minute" if name.startswith("ETTm") else "ratio"


def run(data: str, horizon: int, model_name: str, *, lookback: int = 96, date_col: str | None = None, epochs: int = 10,
        patience: int = 3, batch: int = 32, lr: float = 1e-3, seed: int = 0, max_train_windows: int | None = None,
        protocol: str | None = None, log=print, device: torch.device | str = "cpu") -> dict:
    """Train and test one (dataset, horizon, model) on ``device``; returns the metrics and the test predictions of 3
    windows."""
    device = resolve_device(str(device), "device")
    torch.manual_seed(seed)
    values, cols, period = load(data, date_col)
    protocol = protocol or default_protocol(data)
    splits = make_splits(values, cols, lookback=lookback, horizon=horizon, protocol=protocol)
    kw = {"period": period} if model_name == "seasonal_naive" else {}
    model = build_forecaster(model_name, lookback, horizon, len(cols), **kw).to(device)
    xtr, ytr = splits.windows("train")
    if max_train_windows is not None and len(xtr) > max_train_windows:  # evenly spaced subset, for quick runs
        keep = np.linspace(0, len(xtr) - 1, max_train_windows).round().astype(int)
        xtr, ytr = xtr[keep], ytr[keep]
    xva, yva = splits.windows("val")
    xte, yte = splits.windows("test")
    t0 = time.time()
    best, best_state, bad, epochs_run = float("inf"), None, 0, 0
    params = list(model.parameters())
    if params:
        opt = torch.optim.Adam(params, lr=lr)
        g = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            model.train()
            for xb, yb in _batches(xtr, ytr, batch, True, g, device):
                loss = torch.nn.functional.mse_loss(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            val = score(model, xva, yva, device=device)["mse"]
            epochs_run = epoch + 1
            log(f"{data} H={horizon} {model_name} epoch {epoch + 1}: val mse {val:.4f}")
            if val < best - 1e-6:
                best, bad = val, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
        model.load_state_dict(best_state)
    test = score(model, xte, yte, device=device)
    with torch.no_grad():
        pick = np.linspace(0, len(xte) - 1, 3).round().astype(int)
        preds = model.eval()(torch.from_numpy(xte[pick]).to(device)).cpu().numpy()
    return {"data": data, "horizon": horizon, "model": model_name, "lookback": lookback, "channels": len(cols),
            "protocol": protocol, "seed": seed, "max_epochs": epochs, "max_train_windows": max_train_windows,
            "params": count_params(model), "epochs": epochs_run, "train_seconds": round(time.time() - t0, 1),
            "threads": torch.get_num_threads(), "device": str(device),
            "val_mse": best if params else score(model, xva, yva, device=device)["mse"],
            **{f"test_{k}": v for k, v in test.items()},
            "examples": {"x": xte[pick].tolist(), "y": yte[pick].tolist(), "pred": preds.tolist()}}


def report(out: str) -> str:
    """Markdown table of every result JSON in ``out`` (dataset x horizon, MSE / MAE per model, with the average
    over horizons), written to ``out/results.md``; a PNG of forecasts against the truth per dataset."""
    import glob

    rows = []
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(path) as f:
            rows.append(json.load(f))
    models = [m for m in FORECASTERS if any(r["model"] == m for r in rows)]
    datasets = sorted({r["data"] for r in rows})
    lines = ["| data | horizon | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for d in datasets:
        by = {(r["horizon"], r["model"]): r for r in rows if r["data"] == d}
        horizons = sorted({h for (h, _), r in by.items() if "test_mse" in r})  # skipped horizons are left out
        for h in [*horizons, "avg"]:
            cells = []
            for m in models:
                rs = [by[(hh, m)] for hh in horizons if (hh, m) in by and "test_mse" in by[(hh, m)]]
                if h != "avg":
                    rs = [by[(h, m)]] if (h, m) in by and "test_mse" in by[(h, m)] else []
                elif len(rs) < len(horizons):
                    rs = []
                cells.append(f"{np.mean([r['test_mse'] for r in rs]):.3f} / {np.mean([r['test_mae'] for r in rs]):.3f}"
                             if rs else "n/a")
            lines.append(f"| {d} | {h} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    timing = ["| data | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for d in datasets:
        cells = []
        for m in models:
            rs = [r for r in rows if r["data"] == d and r["model"] == m and "train_seconds" in r]
            cells.append(f"{np.mean([r['train_seconds'] for r in rs]):.0f} s ({np.mean([r['epochs'] for r in rs]):.1f})"
                         if rs else "n/a")
        timing.append(f"| {d} | " + " | ".join(cells) + " |")
    threads = sorted({r.get("threads") for r in rows if r.get("threads")})
    skipped = [f"- {r['data']} H={r['horizon']} {r['model']}: {r['skipped']}" for r in rows if "skipped" in r]
    write_text(os.path.join(out, "results.md"),
               "MSE / MAE on the standardized test split (lookback 96).\n\n" + table + "\n\n"
               f"Training time per run, mean over horizons (mean epochs run), CPU threads {threads}:\n\n"
               + "\n".join(timing) + "\n" + ("\nSkipped:\n" + "\n".join(skipped) + "\n" if skipped else ""))
    _plot_examples(rows, out)
    return table


def _plot_examples(rows, out):
    plt = pyplot()
    if plt is None:
        return
    for d in sorted({r["data"] for r in rows}):
        rs = [r for r in rows if r["data"] == d and r["horizon"] == 96 and "examples" in r]
        if not rs:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        for i, ax in enumerate(axes):
            ex = rs[0]["examples"]
            x, y = np.asarray(ex["x"][i])[:, 0], np.asarray(ex["y"][i])[:, 0]
            ax.plot(range(len(x)), x, color="gray", lw=1, label="lookback")
            ax.plot(range(len(x), len(x) + len(y)), y, color="black", lw=1.5, label="truth")
            for r in rs:
                ax.plot(range(len(x), len(x) + len(y)), np.asarray(r["examples"]["pred"][i])[:, 0], lw=1,
                        label=r["model"])
            ax.set_title(f"{d}, test window {i + 1}, channel 0", fontsize=9)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"forecasts_{os.path.basename(d)}.png"), dpi=110)
        plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="titans forecast", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="vic_elec", help=f"{' | '.join(PRESETS)} | a CSV path")
    ap.add_argument("--date-col", default=None, help="date column of a CSV (default: date/time/datetime/timestamp)")
    ap.add_argument("--horizon", type=int, default=96)
    ap.add_argument("--lookback", type=int, default=96)
    ap.add_argument("--model", default="lmm", choices=sorted(FORECASTERS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-train-windows", type=int, default=None, help="subsample training windows (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", default=None, choices=["ratio", "ett_hour", "ett_minute"],
                    help="splits (default: ett_hour / ett_minute for ETTh* / ETTm* files, else 7:1:2)")
    ap.add_argument("--all", action="store_true", help="every preset x horizon x model; resumable")
    ap.add_argument("--out", default="runs/forecast")
    ap.add_argument("--device", default="cpu", help="where the models train: cpu, cuda, cuda:1, mps, auto")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as e:
        ap.error(str(e))
    if not args.all and args.data not in PRESETS and not os.path.isfile(args.data):
        ap.error(f"--data {args.data!r}: neither a preset ({', '.join(PRESETS)}) nor a CSV file")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    os.makedirs(args.out, exist_ok=True)
    jobs = ([(d, h, m) for d in PRESETS for h in HORIZONS for m in FORECASTERS] if args.all
            else [(args.data, args.horizon, args.model)])
    want = {"lookback": args.lookback, "seed": args.seed, "max_epochs": args.epochs,
            "max_train_windows": args.max_train_windows}
    paths = {job: os.path.join(args.out, f"{os.path.basename(job[0])}_{job[1]}_{job[2]}.json") for job in jobs}
    for path in paths.values():  # --all skips finished runs, so they must be runs of these settings
        if args.all and os.path.exists(path):
            with open(path) as f:
                have = json.load(f)
            if bad := {k: have[k] for k, v in want.items() if k in have and have[k] != v}:
                ap.error(f"{path} was run with {bad}, not {({k: want[k] for k in bad})}: use another --out")
    for (d, h, m), path in paths.items():
        if args.all and os.path.exists(path):
            continue
        try:
            res = run(d, h, m, lookback=args.lookback, date_col=args.date_col, epochs=args.epochs, seed=args.seed,
                      max_train_windows=args.max_train_windows, protocol=args.protocol, device=device)
        except ForecastDataError as e:
            if not args.all:
                raise
            res = {"data": d, "horizon": h, "model": m, "skipped": str(e)}  # e.g. a split shorter than the horizon
        write_json(path, res, indent=None)
        print(json.dumps({k: v for k, v in res.items() if k != "examples"}))
    print(report(args.out))


if __name__ == "__main__":
    main()
