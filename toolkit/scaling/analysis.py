"""From a sweep's results table to fits, summaries and comparisons between variants."""
from __future__ import annotations

import math
from pathlib import Path

from toolkit.errors import UserError
from toolkit.scaling.fit import IsoFlopFit, ParametricFit, fit_isoflop, fit_parametric

REQUIRED = ("variant", "size", "params", "budget", "tokens", "val_nelbo")


def load_results(path: str | Path, finished_only: bool = True):
    """The results table (CSV or parquet) as a DataFrame; a UserError if missing, malformed or empty."""
    import pandas as pd   # deferred: pandas is slow to import; only tables need it
    p = Path(path)
    if p.is_dir():
        p = p / "results.csv"
    if not p.is_file():
        raise UserError(f"results table not found: {p}")
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:  # pandas raises many types for a malformed file
        raise UserError(f"cannot read {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"{p} lacks column(s) {', '.join(missing)}")
    if finished_only and "status" in df.columns:
        df = df[df["status"] == "finished"]
    df = df.dropna(subset=["val_nelbo"])
    if df.empty:
        raise UserError(f"{p} holds no finished runs (empty results table)")
    return df.reset_index(drop=True)


def fit_variants(df, n_boot: int = 500, seed: int = 0, params_col: str = "params") -> dict[str, IsoFlopFit]:
    """Approach 2 per variant (variants with no budget at >= 3 sizes are left out)."""
    fits = {}
    for v, sub in df.groupby("variant"):
        try:
            fits[v] = fit_isoflop(sub[params_col], sub["budget"], sub["val_nelbo"], n_boot=n_boot, seed=seed)
        except UserError:
            continue
    if not fits:
        raise UserError("no variant has a budget with runs at 3 or more sizes: nothing to fit")
    return fits


def fit_variants_parametric(df, n_boot: int = 100, seed: int = 0, params_col: str = "params") -> dict[str, ParametricFit]:
    """Approach 3 per variant with at least 6 runs."""
    return {v: fit_parametric(sub[params_col], sub["tokens"], sub["val_nelbo"], n_boot=n_boot, seed=seed)
            for v, sub in df.groupby("variant") if len(sub) >= 6}


def minima_table(fits: dict[str, IsoFlopFit]):
    """One row per (variant, budget): N*, D*, L*, whether the vertex lies inside the trained sizes."""
    import pandas as pd   # deferred: pandas is slow to import; only tables need it
    rows = [{"variant": v, "budget": x.budget, "n_star": x.n_star, "d_star": x.d_star, "loss_star": x.loss_star,
             "in_range": x.in_range, "sizes": x.n_points} for v, f in fits.items() for x in f.valleys]
    return pd.DataFrame(rows)


def exponents_table(fits: dict[str, IsoFlopFit], parametric: dict[str, ParametricFit] | None = None):
    """One row per variant: approach-2 exponents with intervals, and approach 3 where fitted."""
    import pandas as pd   # deferred: pandas is slow to import; only tables need it
    rows = []
    for v, f in fits.items():
        row = {"variant": v}
        for k, val in f.exponents.items():
            lo, hi = f.intervals.get(k, (math.nan, math.nan))
            row.update({k: val, f"{k}_lo": lo, f"{k}_hi": hi})
        if parametric and v in parametric:
            p = parametric[v]
            for k, val in p.as_dict().items():
                row[f"ap3_{k}"] = val
            for k, (lo, hi) in p.intervals.items():
                row.update({f"ap3_{k}_lo": lo, f"ap3_{k}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def compute_to_reach(fit: IsoFlopFit, loss: float) -> float:
    """FLOPs at which the variant's L*(C) power law reaches `loss` (C = (L / k)^(1 / a_L))."""
    if "L" not in fit.prefactors or not math.isfinite(fit.exponents["a_L"]) or fit.exponents["a_L"] >= 0:
        return math.nan
    return (loss / fit.prefactors["L"]) ** (1.0 / fit.exponents["a_L"])
