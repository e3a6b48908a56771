"""`python -m toolkit.scaling flops|grid|fit ...`: FLOPs of a size, the model grids, fits of a results table.

  flops SIZE [--seq-len 2048] [--vocab 32001] [--batch 256] [--budget C] [--json]
  grid [--vocab 32001] [--json]
  fit RESULTS.csv [--out DIR] [--bootstrap 500] [--approach3] [--plots] [--json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from toolkit.cli.common import ArgParser
from toolkit.errors import UserError, cli_main
from toolkit.presets import CPU_GRID, PAPER_GRID
from toolkit.scaling import analysis
from toolkit.scaling.flops import flops_report, require_steps
from toolkit.scaling.grid import param_counts, size
from toolkit.scaling import seeds
from toolkit.scaling.summary import parse_compare, summary_markdown


def _flops(a) -> dict:
    s = size(a.size)
    if a.seq_len < 1 or a.vocab < 1 or a.batch < 1:
        raise UserError("--seq-len, --vocab and --batch must be positive")
    out = {"size": s.name, "n_layers": s.n_layers, "d_model": s.d_model, "n_heads": s.n_heads,
           "seq_len": a.seq_len, "vocab_size": a.vocab, **param_counts(s.n_layers, s.d_model, a.vocab),
           **flops_report(s.n_layers, s.d_model, s.n_heads, a.vocab, a.seq_len)}
    if a.budget is not None:
        out["batch_size"] = a.batch
        out["budget"] = a.budget
        out["max_steps"] = require_steps(a.budget, s.name, s.n_layers, s.d_model, a.vocab, a.seq_len, a.batch)
        out["tokens"] = out["max_steps"] * a.batch * a.seq_len
    if not a.json:
        fwd = out["forward_per_sequence"]
        print(f"{s.name}: {s.n_layers} layers, d={s.d_model}, {s.n_heads} heads; "
              f"{out['non_embedding']:,} non-embedding / {out['total']:,} params (V={a.vocab})")
        print(f"forward FLOPs per {a.seq_len}-token sequence: {fwd['paper']:.6g} (paper accounting), "
              f"{fwd['attention']:.6g} with attention scores, {fwd['reference']:.6g} reference small terms")
        print(f"training FLOPs per sequence (3x forward): {out['train_per_sequence']['paper']:.6g}")
        if a.budget is not None:
            print(f"budget {a.budget:.3g}: max_steps = {out['max_steps']} at batch {a.batch} ({out['tokens']:,} tokens)")
    return out


def _grid(a) -> list:
    rows = []
    for grid, table in (("cpu", CPU_GRID), ("paper", PAPER_GRID)):
        for name, (nl, d, h) in table.items():
            rows.append({"grid": grid, "size": name, "n_layers": nl, "d_model": d, "n_heads": h,
                         **param_counts(nl, d, a.vocab)})
    if not a.json:
        print(f"{'grid':<6}{'size':<9}{'L':>4}{'d':>6}{'h':>4}{'non-embedding':>16}{'total':>16}   (V={a.vocab})")
        for r in rows:
            print(f"{r['grid']:<6}{r['size']:<9}{r['n_layers']:>4}{r['d_model']:>6}{r['n_heads']:>4}"
                  f"{r['non_embedding']:>16,}{r['total']:>16,}")
    return rows


def _fit(a) -> dict:
    df = analysis.load_results(a.results)
    compare = parse_compare(a.compare, df["variant"])
    fits = analysis.fit_variants(df, n_boot=a.bootstrap)
    parametric = analysis.fit_variants_parametric(df, n_boot=min(a.bootstrap, 200)) if a.approach3 else None
    minima = analysis.minima_table(fits)
    exps = analysis.exponents_table(fits, parametric)
    out_dir = Path(a.out) if a.out else Path(a.results).parent if Path(a.results).is_file() else Path(a.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    minima.to_csv(out_dir / "minima.csv", index=False)
    exps.to_csv(out_dir / "exponents.csv", index=False)
    report = summary_markdown(df, fits, compare, parametric)
    if seeds.has_seeds(df):
        report += "\n" + seeds.seeds_markdown(df, compare)
    (out_dir / "summary.md").write_text(report)
    if a.plots:
        import matplotlib   # deferred: plotting is optional and slow to import
        matplotlib.use("Agg")
        from toolkit.scaling.plots import plot_isoflop, plot_optima   # deferred: see above
        plot_isoflop(df, fits).savefig(out_dir / "isoflop.png", dpi=120)
        plot_optima(fits).savefig(out_dir / "optima.png", dpi=120)
    result = {"minima": minima.to_dict("records"), "exponents": exps.to_dict("records"), "summary": report,
              "out": str(out_dir)}
    if not a.json:
        import pandas as pd   # deferred: pandas is slow to import; only `fit` needs it
        with pd.option_context("display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
            print(minima.to_string(index=False))
            print()
            print(exps.to_string(index=False))
        print("\n" + report)
        print(f"wrote minima.csv, exponents.csv, summary.md{', isoflop.png, optima.png' if a.plots else ''} in {out_dir}")
    return result


@cli_main
def main(argv: list[str] | None = None):
    p = ArgParser(prog="python -m toolkit.scaling", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=ArgParser)
    f = sub.add_parser("flops", help="FLOPs and parameters of one size")
    f.add_argument("size")
    f.add_argument("--seq-len", type=int, default=2048)
    f.add_argument("--vocab", type=int, default=32001)
    f.add_argument("--batch", type=int, default=256)
    f.add_argument("--budget", type=float, default=None, help="also print max_steps for this many FLOPs")
    f.add_argument("--json", action="store_true")
    g = sub.add_parser("grid", help="the CPU and paper model grids with parameter counts")
    g.add_argument("--vocab", type=int, default=32001)
    g.add_argument("--json", action="store_true")
    r = sub.add_parser("fit", help="approach 2 (and 3) fits of a sweep's results table")
    r.add_argument("results", help="results.csv (or a sweep folder holding one)")
    r.add_argument("--out", default=None, help="folder for minima.csv, exponents.csv and plots")
    r.add_argument("--bootstrap", type=int, default=500)
    r.add_argument("--approach3", action="store_true", help="also fit L = E + A/N^a + B/D^b (Huber)")
    r.add_argument("--plots", action="store_true")
    r.add_argument("--compare", action="append", default=[], metavar="BETTER:BASELINE",
                   help="FLOPs one variant saves over another at equal loss (repeatable), in summary.md")
    r.add_argument("--json", action="store_true")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    result = {"flops": _flops, "grid": _grid, "fit": _fit}[a.cmd](a)
    if a.json:
        print(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
