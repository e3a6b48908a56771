"""The speed-quality explorer: Gen PPL vs tokens/s over step counts, with the Pareto frontier.

For each selected model and step count it samples, times the sampler, scores the samples'
generative perplexity under an AR evaluator and their unigram entropy (a guard against the
low-PPL, repetitive failure mode). This is the paper's central comparison, run locally; with
several decoding strategies selected, each (model, strategy) pair is its own curve, compared
at the same step counts (equal NFE for every strategy but adaptive thresholds).
"""
from __future__ import annotations

import math

from toolkit.errors import UserError
from toolkit.evaluation.metrics import Samples, rounded, score_samples
from toolkit.samplers import supported

from gui.live import MAX_STEPS, Run, Settings, check_settings
from gui.render import short_name
from gui.strategies import DEFAULT_STRATEGY, SAMPLER_KEY

MAX_POINTS = 24      # (model, step count) pairs per sweep
MAX_SAMPLES = 16

COLUMNS = ["model", "family", "sampler", "steps", "nfe", "seconds", "tokens_per_s", "gen_ppl", "entropy", "repetitive", "pareto"]


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


def pareto_front(rows: list[dict]) -> list[int]:
    """Indices of rows no other row beats on both axes (higher tokens/s, lower Gen PPL).

    Rows flagged `repetitive` are left out: their low Gen PPL is the metric's failure mode.
    """
    ok = [i for i, r in enumerate(rows) if not r.get("repetitive")]
    front = []
    for i in ok:
        a = rows[i]
        dominated = any(rows[j]["tokens_per_s"] >= a["tokens_per_s"] and rows[j]["gen_ppl"] <= a["gen_ppl"]
                        and (rows[j]["tokens_per_s"] > a["tokens_per_s"] or rows[j]["gen_ppl"] < a["gen_ppl"])
                        for j in ok if j != i)
        if not dominated:
            front.append(i)
    return front


def is_repetitive(entropy: float, tokens: int) -> bool:
    """Below half the largest possible unigram entropy (log of the token count): a repeating sample."""
    return tokens > 1 and entropy < 0.5 * math.log(tokens)


def score(run: Run, evaluator) -> dict:
    """NFE, tokens/s, Gen PPL (under the evaluator) and entropy of a finished run's generated part,
    rounded for the table (toolkit.evaluation.metrics is the one definition of each)."""
    samples = Samples(texts=run.texts(), tokens=run.last.tokens[:, len(run.prompt_ids):].tolist(),
                      nfe=run.last.nfe, seconds=run.seconds, generated=run.generated_tokens)
    scores = score_samples(samples, ("nfe", "tokens_per_s", "gen_ppl", "entropy"), evaluator)
    return rounded({k: scores[k] for k in ("nfe", "tokens_per_s", "gen_ppl", "entropy")})


def with_sampler(settings: Settings, family: str, sampler: str) -> Settings:
    return settings.derive({**settings.options, family: {**settings.options.get(family, {}), SAMPLER_KEY: sampler}})


def sweep(registry, keys: list[str], step_counts: list[int], settings: Settings, num_samples: int,
          samplers: tuple[str, ...] | list[str] = (DEFAULT_STRATEGY,)):
    """Yield the growing list of result rows, one (model, strategy, step count) at a time.

    A strategy a model's family does not offer is skipped for that model."""
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(f"samples per point must be between 1 and {MAX_SAMPLES} (got {num_samples})")
    unknown = [k for k in keys if k not in registry.keys]
    if unknown:
        raise UserError(f"unknown model {unknown[0]!r} (available: {', '.join(registry.keys)})")
    models = {k: registry.get(k) for k in keys}
    samplers = list(samplers or [DEFAULT_STRATEGY])
    pairs = [(k, s) for k in keys for s in samplers if s in supported(models[k].family)]
    if keys and not pairs:
        raise UserError(f"none of the selected models offers the strategies {', '.join(samplers)}")
    if len(pairs) * len(step_counts) > MAX_POINTS:
        raise UserError(f"at most {MAX_POINTS} (model, strategy, step count) points per sweep "
                        f"(asked for {len(pairs)} x {len(step_counts)})")
    check_settings(settings, models)
    evaluator = registry.evaluator()
    rows: list[dict] = []
    for key, sampler in pairs:
        seen_steps = set()
        for steps in step_counts:
            s = with_sampler(settings.derive(steps=steps), models[key].family.name, sampler)
            run = Run(key, models[key], s, num_samples)
            while not run.done:
                run.advance()
            if run.error:
                raise UserError(f"{key}: {run.error}")
            taken = len(run.trace)
            if taken in seen_steps:      # the sampler ignores the step count (e.g. one step per token)
                continue
            seen_steps.add(taken)
            m = score(run, evaluator)
            rows.append({"model": key, "family": run.model.family.name, "sampler": sampler,
                         "steps": taken, "nfe": m["nfe"],
                         "seconds": round(run.seconds, 4), "tokens_per_s": m["tokens_per_s"],
                         "gen_ppl": m["gen_ppl"], "entropy": m["entropy"],
                         "repetitive": is_repetitive(m["entropy"], s.base.length - len(run.prompt_ids)), "pareto": False})
            front = set(pareto_front(rows))
            for i, r in enumerate(rows):
                r["pareto"] = i in front
            yield rows


def explorer_plot(rows: list[dict], evaluator_name: str = "AR"):
    """Gen PPL (log) vs tokens/s (log), one colour per model, step counts annotated, frontier drawn."""
    from matplotlib.figure import Figure   # deferred: matplotlib is slow to import
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes)
        return fig
    colours = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#6e7781", "#bf3989", "#0550ae"]
    for n, (key, sampler) in enumerate(dict.fromkeys((r["model"], r["sampler"]) for r in rows)):
        pts = [r for r in rows if r["model"] == key and r["sampler"] == sampler]
        colour = colours[n % len(colours)]
        ax.plot([r["tokens_per_s"] for r in pts], [r["gen_ppl"] for r in pts], "-", lw=1, color=colour, alpha=0.85,
                label=short_name(key) + ("" if sampler == DEFAULT_STRATEGY else f" · {sampler}"))
        for rep, marker in ((False, "o"), (True, "x")):
            sel = [r for r in pts if bool(r.get("repetitive")) == rep]
            ax.plot([r["tokens_per_s"] for r in sel], [r["gen_ppl"] for r in sel], marker, ms=6, color=colour)
        for r in pts:
            ax.annotate(str(r["steps"]), (r["tokens_per_s"], r["gen_ppl"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["tokens_per_s"])
    ax.plot([r["tokens_per_s"] for r in front], [r["gen_ppl"] for r in front], "--", color="black", lw=1.2,
            label="Pareto frontier", zorder=0)
    ax.scatter([r["tokens_per_s"] for r in front], [r["gen_ppl"] for r in front], s=90, facecolors="none",
               edgecolors="black", lw=1.2)
    if all(r["tokens_per_s"] > 0 for r in rows):
        from matplotlib.ticker import NullFormatter   # deferred: see above
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if all(r["gen_ppl"] > 0 and math.isfinite(r["gen_ppl"]) for r in rows):
        ax.set_yscale("log")
    ax.set_xlabel("tokens / s (this machine)")
    ax.set_ylabel(f"Gen PPL under {short_name(evaluator_name)} (lower is better)")
    ax.set_title("speed vs quality (labels: sampling steps; x = repetitive samples, off the frontier)",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig
