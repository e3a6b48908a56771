"""The speed-quality explorer: Gen PPL vs cost over step counts, with the Pareto frontier.

For each selected model, decoding strategy and step count it samples, times the sampler (the
median of several identical runs, with their range), scores the samples' generative perplexity
under an AR judge and their unigram entropy. Entropy guards against the low-PPL, repetitive
failure mode; its threshold is calibrated on real text: the judge's validation text, cut to the
samples' length, scored the same way (its Gen PPL is drawn as a reference line too). A model
scored by itself (the judge's own samples) is marked and, like repetitive points, kept off the
frontier. This is the paper's central comparison, run locally; strategies are compared at the
same step counts (equal NFE for every strategy but adaptive thresholds).

The frontier's cost axis is, by default, network evaluations per generated token: it depends on
the sampler alone, and Gen PPL and entropy are seeded, so identical sweeps give the identical
frontier on any machine, loaded or not. Measured tokens/s (with its spread) is the other axis.
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

from toolkit.errors import UserError
from toolkit.evaluation.generation import DEFAULT_EVALUATOR
from toolkit.evaluation.matched_entropy import validation_chunks
from toolkit.evaluation.metrics import Samples, rounded, score_samples
from toolkit.plotting import series_style
from toolkit.samplers import supported

from gui.live import MAX_STEPS, Run, Settings, check_settings
from gui.render import short_name
from gui.strategies import DEFAULT_STRATEGY, SAMPLER_KEY

POINTS_PER_MODEL = 24   # the cap: (strategy, step count) points per ticked model (defaults: <= 2 x 5; all four x 6 fit)
DEFAULT_STEP_COUNTS = (4, 8, 16, 32, 64)
MAX_SAMPLES = 16
REPEATS = 3          # timing rounds per point: tokens/s is their median, the error bar their range
ROUND_SECONDS = 0.2  # a round repeats a short run until this much time is timed (and takes the mean)
SPEED_TIE = 0.25     # measured speeds within 25% are a tie for that axis's frontier (identical sweeps differ ~20%)
# the frontier's x axis: key -> (label, whether more is better); the first is the default
AXES = {"nfe_per_token": ("network evaluations per generated token (deterministic)", False),
        "tokens_per_s": ("generated tokens / s on this CPU (measured)", True)}
DEFAULT_AXIS = "nfe_per_token"
REPETITIVE_FRACTION = 0.9   # repetitive: mean entropy below this fraction of real text's (same length)
REFERENCE_CHUNKS = 32       # validation chunks scored for the reference

COLUMNS = ["model", "family", "sampler", "steps", "nfe", "nfe_per_token", "runs", "seconds", "tokens_per_s",
           "tokens_per_s_min", "tokens_per_s_max", "gen_ppl", "entropy", "repetitive", "self_scored", "pareto"]


def parse_steps(text: str) -> list[int]:
    """'8, 16 32' -> [8, 16, 32], each within 1..MAX_STEPS, duplicates dropped."""
    out = []
    for part in str(text).replace(",", " ").split():
        try:
            v = int(part)
        except ValueError:
            raise UserError(f"step counts must be whole numbers (got '{part}')") from None
        if not 1 <= v <= MAX_STEPS:
            raise UserError(f"each step count must be between 1 and {MAX_STEPS} (got {v})")
        if v not in out:
            out.append(v)
    if not out:
        raise UserError("enter at least one step count, e.g. 8, 16, 32")
    return out


def pareto_front(rows: list[dict], axis: str = DEFAULT_AXIS, tie: float = SPEED_TIE) -> list[int]:
    """Indices of rows no other row beats on (axis, Gen PPL); rows flagged `repetitive` (low Gen PPL
    from repetition) or `self_scored` (judged by themselves) are left out.

    On the deterministic cost axis a row is beaten by one no worse on both and better on one. On the
    measured tokens/s axis it is beaten only by one no worse in Gen PPL and more than `tie` (a
    fraction) faster: on a shared machine the medians of identical sweeps differ by up to ~20%
    (benchmarks/gui_explorer.py), so a smaller gap would let a rerun change the frontier.
    """
    check_axis(axis)
    ok = [i for i, r in enumerate(rows) if not r.get("repetitive") and not r.get("self_scored")]

    def beats(j, i):
        (pj, xj), (pi, xi) = ((rows[k]["gen_ppl"], rows[k][axis]) for k in (j, i))
        if axis == "tokens_per_s":
            return pj <= pi and (xj > (1 + tie) * xi or (pj < pi and xj == xi))
        return pj <= pi and xj <= xi and (pj < pi or xj < xi)

    return [i for i in ok if not any(beats(j, i) for j in ok if j != i)]


def check_axis(axis: str) -> None:
    if axis not in AXES:
        raise UserError(f"unknown frontier axis {axis!r} (known: {', '.join(AXES)})")


def staircase(rows: list[dict], axis: str = DEFAULT_AXIS) -> tuple[list[float], list[float]]:
    """The frontier as a staircase that only goes one way: from the cheapest (or fastest) point on,
    the best Gen PPL reached so far, stepping down at each point that improves it."""
    more_is_better = AXES[axis][1]
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: -r[axis] if more_is_better else r[axis])
    xs, ys = [], []
    for r in front:
        if not ys or r["gen_ppl"] < ys[-1]:
            xs.append(r[axis])
            ys.append(r["gen_ppl"])
    return xs, ys


def default_strategies(families) -> list[str]:
    """The strategies ticked by default, from the registry: the default one, plus the other strategy
    most of `families` offer (ties: registry order); any number of registered strategies keeps it two."""
    offered = [n for f in families for n in supported(f)]   # each family's in the registry's order
    others = [n for n in dict.fromkeys(offered) if n != DEFAULT_STRATEGY]
    best = max(others, key=offered.count, default=None)   # max keeps the first of equals
    return [DEFAULT_STRATEGY] + ([best] if best else [])


def point_cap(models: int) -> int:
    """The most (model, strategy, step count) points one sweep may ask for: scaled to the models ticked."""
    return POINTS_PER_MODEL * max(models, 1)


@dataclass
class Reference:
    """Real text of the samples' length, scored like them: the yardstick for repetition and Gen PPL."""
    length: int
    entropy: float        # mean unigram entropy of the validation chunks (nats)
    gen_ppl: float        # their Gen PPL under the judge
    chunks: int

    @property
    def threshold(self) -> float:
        return REPETITIVE_FRACTION * self.entropy

    def describe(self) -> str:
        return (f"validation text ({self.chunks} chunks of {self.length} tokens): entropy {self.entropy:.2f} nats, "
                f"Gen PPL {self.gen_ppl:.1f}; repetitive below {REPETITIVE_FRACTION:.0%} of its entropy "
                f"({self.threshold:.2f} nats)")


_references: dict = {}


def reference(judge, length: int, chunks: int = REFERENCE_CHUNKS) -> Reference:
    """The judge's validation text cut into `chunks` pieces of `length` tokens, scored (cached)."""
    key = (judge.path, length, chunks)
    if key not in _references:
        rows = validation_chunks(judge, length, chunks, "the repetition flag (the judge's validation text)")
        s = score_samples(Samples(texts=[judge.decode(r) for r in rows], tokens=rows), ("gen_ppl", "entropy"), judge)
        _references[key] = Reference(length, s["entropy"], s["gen_ppl"], len(rows))
    return _references[key]


def score(run: Run, evaluator) -> dict:
    """NFE, Gen PPL (under the evaluator) and entropy of a finished run's generated part, rounded for
    the table (toolkit.evaluation.metrics is the one definition of each)."""
    samples = Samples(texts=run.texts(), tokens=run.last.tokens[:, len(run.prompt_ids):].tolist(),
                      nfe=run.last.nfe, seconds=run.seconds, generated=run.generated_tokens)
    scores = score_samples(samples, ("nfe", "gen_ppl", "entropy"), evaluator)
    return rounded({k: scores[k] for k in ("nfe", "gen_ppl", "entropy")})


def finished(key, model, settings: Settings, num_samples: int) -> Run:
    run = Run(key, model, settings, num_samples)
    while not run.done:
        run.advance()
    if run.error:
        raise UserError(f"{key}: {run.error}")
    return run


def set_timing(row: dict, seconds: list[float], generated: int) -> None:
    """The row's speed: the median of its timed runs, and the range they span."""
    median = statistics.median(seconds)   # seconds to 4 significant digits: a fast run keeps its precision
    row.update(runs=len(seconds), seconds=float(f"{median:.4g}"), tokens_per_s=round(generated / median, 1),
               tokens_per_s_min=round(generated / max(seconds), 1),
               tokens_per_s_max=round(generated / min(seconds), 1))


def mark_front(rows: list[dict], axis: str = DEFAULT_AXIS) -> None:
    front = set(pareto_front(rows, axis))
    for i, r in enumerate(rows):
        r["pareto"] = i in front


def with_sampler(settings: Settings, family: str, sampler: str) -> Settings:
    return settings.derive({**settings.options, family: {**settings.options.get(family, {}), SAMPLER_KEY: sampler}})


def plan(models: dict, samplers: list[str], step_counts: list[int]) -> list[tuple[str, str]]:
    """The (model, strategy) pairs of a sweep; a strategy a family does not offer is skipped for it."""
    pairs = [(k, s) for k, m in models.items() for s in samplers if s in supported(m.family)]
    if models and not pairs:
        raise UserError(f"none of the selected models offers the strategies {', '.join(samplers)}")
    if len(pairs) * len(step_counts) > point_cap(len(models)):
        raise UserError(f"at most {POINTS_PER_MODEL} (strategy, step count) points per model, {point_cap(len(models))} "
                        f"for {len(models)} model(s) (asked for {len(pairs)} (model, strategy) pairs x "
                        f"{len(step_counts)} step counts)")
    return pairs


def sweep(registry, keys: list[str], step_counts: list[int], settings: Settings, num_samples: int,
          samplers: tuple[str, ...] | list[str] = (DEFAULT_STRATEGY,), repeats: int = REPEATS,
          axis: str = DEFAULT_AXIS):
    """Yield the growing list of result rows, one (model, strategy, step count) at a time; the
    frontier is marked on `axis`."""
    check_axis(axis)
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(f"samples per point must be between 1 and {MAX_SAMPLES} (got {num_samples})")
    unknown = [k for k in keys if k not in registry.keys]
    if unknown:
        raise UserError(f"unknown model {unknown[0]!r} (available: {', '.join(registry.keys)})")
    models = {k: registry.get(k) for k in keys}
    pairs = plan(models, list(samplers or [DEFAULT_STRATEGY]), step_counts)
    check_settings(settings, models)
    judge = registry.evaluator()
    rows: list[dict] = []
    timed: list[tuple[str, Settings, int, list[float]]] = []   # per row: what to rerun, how often, its timings
    for key, sampler in pairs:        # first round: sample, score and time every point once
        seen_steps = set()
        for steps in step_counts:
            s = with_sampler(settings.derive(steps=steps), models[key].family.name, sampler)
            run = finished(key, models[key], s, num_samples)
            taken = len(run.trace)
            if taken in seen_steps:      # the sampler ignores the step count (e.g. one step per token)
                continue
            seen_steps.add(taken)
            ref = reference(judge, run.generated_tokens // num_samples)
            m = score(run, judge)
            rows.append({"model": key, "family": run.model.family.name, "sampler": sampler, "steps": taken,
                         "nfe": m["nfe"], "nfe_per_token": round(m["nfe"] / ref.length, 4),
                         "gen_ppl": m["gen_ppl"], "entropy": m["entropy"],
                         "repetitive": m["entropy"] < ref.threshold,
                         "self_scored": run.model.path == judge.path, "pareto": False})
            per_round = min(20, max(1, math.ceil(ROUND_SECONDS / max(run.seconds, 1e-6))))
            timed.append((key, s, per_round, []))
            set_timing(rows[-1], [run.seconds], run.generated_tokens)   # provisional: the warm-up run
            mark_front(rows, axis)
            yield rows
    # then the timings, in rounds over all points, each round in its own (seeded) order: a burst of
    # load on a shared machine lands on one round of every point (the median drops it), and a slow
    # drift of the load over a round does not always favour the points timed last; a round times a
    # short run several times (ROUND_SECONDS), so one timing is not one scheduler tick
    for round_no in range(repeats):
        order = list(range(len(rows)))
        random.Random(round_no).shuffle(order)
        for i in order:
            key, s, per_round, seconds = timed[i]
            runs = [finished(key, models[key], s, num_samples) for _ in range(per_round)]
            seconds.append(sum(r.seconds for r in runs) / per_round)
            set_timing(rows[i], seconds, runs[0].generated_tokens)
        mark_front(rows, axis)
        yield rows


# -- the figure ------------------------------------------------------------------------------------
def series(rows: list[dict]):
    """Yield (label, points sorted by NFE, style) per (model, strategy): colour = family, marker =
    strategy, line style = the model among its family's (checkpoints or variants). The one style of
    both figures, so a series looks the same in each."""
    per_family: dict[str, list[str]] = {}
    for key in dict.fromkeys(r["model"] for r in rows):
        fam = next(r["family"] for r in rows if r["model"] == key)
        per_family.setdefault(fam, []).append(key)
    for key, sampler in dict.fromkeys((r["model"], r["sampler"]) for r in rows):
        pts = sorted((r for r in rows if r["model"] == key and r["sampler"] == sampler), key=lambda r: r["nfe"])
        fam = pts[0]["family"]
        style = series_style(fam, sampler, per_family[fam].index(key))     # toolkit/plotting.py
        yield short_name(key) + ("" if sampler == DEFAULT_STRATEGY else f" · {sampler}"), pts, style


def nfe_plot(rows: list[dict], evaluator_name: str = DEFAULT_EVALUATOR, ref: Reference | None = None):
    """Two panels against network evaluations: Gen PPL (log) and unigram entropy, with real text's
    values and the repetition threshold; the explorer figure's styles, the legend outside."""
    from matplotlib.figure import Figure   # deferred: matplotlib is slow to import
    fig = Figure(figsize=(12.5, 4), layout="constrained")
    ppl, ent = fig.subplots(1, 2)
    for label, pts, style in series(rows):
        nfe = [r["nfe"] for r in pts]
        ppl.plot(nfe, [r["gen_ppl"] for r in pts], lw=1.2, ms=5, **style)
        ent.plot(nfe, [r["entropy"] for r in pts], lw=1.2, ms=5, label=label, **style)
    if ref is not None:
        ppl.axhline(ref.gen_ppl, ls=":", color="#555555", lw=1)
        ent.axhline(ref.entropy, ls=":", color="#555555", lw=1, label=f"real text ({ref.chunks} x {ref.length} tokens)")
        ent.axhline(ref.threshold, ls="--", color="#b00020", lw=1, label=f"repetition threshold ({ref.threshold:.2f} nats)")
    ppl.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)",
            ylabel=f"Gen PPL under {short_name(evaluator_name)} (lower is better)")
    ent.set(xscale="log", xlabel="network evaluations (NFE)", ylabel="unigram entropy of the samples (nats)")
    for ax in (ppl, ent):
        ax.grid(alpha=0.3, which="both")
    ent.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    return fig


def explorer_plot(rows: list[dict], evaluator_name: str = DEFAULT_EVALUATOR, ref: Reference | None = None,
                  repeats: int = REPEATS, axis: str = DEFAULT_AXIS):
    """Gen PPL (log) vs the cost `axis` (log): colour = family, marker = strategy, line style =
    checkpoint, bars = timing range (tokens/s), labels = steps taken and entropy, the frontier a
    dashed staircase; the legend sits outside the axes."""
    check_axis(axis)
    from matplotlib.figure import Figure   # deferred: matplotlib is slow to import
    from matplotlib.lines import Line2D
    fig = Figure(figsize=(9.5, 4.8), layout="constrained")
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes)
        return fig
    for label, pts, style in series(rows):
        colour, marker = style["color"], style["marker"]
        xs, ys = [r[axis] for r in pts], [r["gen_ppl"] for r in pts]
        xerr = None if axis != "tokens_per_s" else [
            [r["tokens_per_s"] - r.get("tokens_per_s_min", r["tokens_per_s"]) for r in pts],
            [r.get("tokens_per_s_max", r["tokens_per_s"]) - r["tokens_per_s"] for r in pts]]
        ax.errorbar(xs, ys, xerr=xerr, fmt=style["ls"], color=colour, lw=1.2, elinewidth=0.8, capsize=2, alpha=0.9,
                    marker=marker, ms=6, mfc=colour, label=label)
        for r in pts:
            x = r[axis]
            if r.get("repetitive"):
                ax.plot(x, r["gen_ppl"], marker=marker, ms=9, mfc="white", mec=colour, mew=1.5, zorder=4)
                ax.plot(x, r["gen_ppl"], "x", ms=8, color="#b00020", mew=2, zorder=5)
            if r.get("self_scored"):
                ax.plot(x, r["gen_ppl"], marker="*", ms=14, mfc="none", mec="black", mew=1)
            ax.annotate(f"{r['steps']}: {r['entropy']:.2f}", (x, r["gen_ppl"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    front = [r for r in rows if r["pareto"]]
    steps_x, steps_y = staircase(rows, axis)
    ax.step(steps_x, steps_y, "--", where="post", color="black", lw=1.2, zorder=0)
    ax.scatter([r[axis] for r in front], [r["gen_ppl"] for r in front], s=110, facecolors="none",
               edgecolors="black", lw=1.2)
    extra = [Line2D([], [], ls="--", color="black", marker="o", mfc="none", label="Pareto frontier")]
    if any(r.get("repetitive") for r in rows):
        extra.append(Line2D([], [], ls="", marker="x", ms=8, color="#b00020", mew=2,
                            label="repetitive" + (f" (entropy < {ref.threshold:.2f} nats)" if ref else "")
                            + ": off the frontier"))
    if any(r.get("self_scored") for r in rows):
        extra.append(Line2D([], [], ls="", marker="*", ms=10, mfc="none", mec="black",
                            label="scored by itself (the judge): off the frontier"))
    if ref is not None:
        ax.axhline(ref.gen_ppl, color="#555555", ls=":", lw=1)
        extra.append(Line2D([], [], ls=":", color="#555555", label=f"real text: Gen PPL {ref.gen_ppl:.0f}"))
    if all(r[axis] > 0 for r in rows):
        from matplotlib.ticker import NullFormatter   # deferred: see above
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if all(r["gen_ppl"] > 0 and math.isfinite(r["gen_ppl"]) for r in rows):
        ax.set_yscale("log")
    ax.set_xlabel(f"generated tokens / s on this CPU (median of {repeats} timing rounds; bars: their range)"
                  if axis == "tokens_per_s" else f"{AXES[axis][0]}, lower is cheaper")
    ax.set_ylabel(f"Gen PPL under {short_name(evaluator_name)} (lower is better)")
    ax.set_title("cost vs quality; labels: steps taken (AR takes one per token): mean unigram entropy (nats)",
                 fontsize=10)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + extra, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig
