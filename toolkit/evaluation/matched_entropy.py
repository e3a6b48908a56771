"""Gen PPL at matched entropy: compare samplers where temperature cannot fake quality.

Lowering the temperature lowers Gen PPL and the samples' unigram entropy together, so a model
that is merely sharper looks better at temperature 1. Here each model is first brought to the
same mean unigram entropy (a target in nats) by choosing its temperature, and Gen PPL is read
there. Entropy is found from samples alone (no judge), by bisection on the temperature with the
same seeds at every probe (common random numbers keep the curve monotone enough), pooled over
the seeds; the judge scores only the final temperature's samples, with a bootstrap interval.
Gen PPL moves ~10% per 0.01 nat of entropy at this toolkit's demo scale, so the tolerance matters.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from toolkit.errors import UserError
from toolkit.evaluation.generation import load_evaluator, unigram_entropy
from toolkit.evaluation.metrics import as_evaluator
from toolkit.sample_request import SampleRequest

TEMPERATURE_RANGE = (0.25, 2.0)   # where the bisection looks for the target entropy
TOLERANCE = 0.01                  # nats: |mean entropy - target| accepted
MAX_PROBES = 20                   # temperatures tried before giving up
MIN_WIDTH = 0.001                 # a bracket narrower than this in temperature is a jump, not a slope
BOOTSTRAP_RESAMPLES = 1000


@dataclass
class Scored:
    """One sampling run (one temperature, one seed), per sample: entropy, and the judge's NLL and tokens."""
    temperature: float
    seed: int
    entropies: list[float]
    texts: list[str] = field(default_factory=list, repr=False)
    nll: list[float] = field(default_factory=list)
    judged: list[int] = field(default_factory=list)   # tokens the judge scored per sample

    @property
    def entropy(self) -> float:
        return sum(self.entropies) / len(self.entropies)

    @property
    def gen_ppl(self) -> float:
        return math.exp(sum(self.nll) / max(sum(self.judged), 1))

    def judge(self, judge) -> "Scored":
        """Score the texts under the judge (once)."""
        if not self.nll:
            judge = as_evaluator(judge)
            for text in self.texts:
                nll, n = judge.nll(text)
                self.nll.append(nll)
                self.judged.append(n)
        return self


def sample_scored(model, request: SampleRequest, temperature: float, seed: int, judge=None) -> Scored:
    """Sample `request` at `temperature` with `seed`; entropy of each sample's generated ids, and its
    judge NLL when a judge is given."""
    texts, last = model.generate(replace(request, temperature=temperature, seed=seed))
    rows = last.tokens[:, request.prompt_length:].tolist()
    out = Scored(temperature, seed, [unigram_entropy(r) for r in rows], texts)
    return out if judge is None else out.judge(judge)


def pooled_entropy(runs: list[Scored]) -> float:
    return sum(sum(r.entropies) for r in runs) / sum(len(r.entropies) for r in runs)


def find_temperature(entropy_at: Callable[[float], float], target: float, tolerance: float = TOLERANCE,
                     low: float = TEMPERATURE_RANGE[0], high: float = TEMPERATURE_RANGE[1],
                     max_probes: int = MAX_PROBES) -> tuple[float, float, list[tuple[float, float]]]:
    """(temperature, its entropy, every (temperature, entropy) probed) with |entropy - target| <= tolerance.

    A bisection that keeps the target bracketed, starting at T = 1; each new probe interpolates
    between the bracket's ends (the Illinois rule: an end kept twice counts half as far from the
    target, since entropy is concave in T and plain interpolation would creep from one side), and
    halves the bracket when the guess falls near an end. Entropy must rise with temperature.
    """
    probes: list[tuple[float, float]] = []

    def probe(temp: float) -> float:
        h = entropy_at(temp)
        probes.append((temp, h))
        if abs(h - target) <= tolerance:
            raise _Found
        return h

    try:
        first = min(max(1.0, low), high)
        h = probe(first)
        if h < target and first < high:
            low, h_low, high, h_high = first, h, high, probe(high)
        elif h > target and first > low:
            low, h_low, high, h_high = low, probe(low), first, h
        else:
            h_low = h_high = h
        if h_low >= h_high:
            raise UserError(f"entropy does not rise with temperature here ({h_low:.3f} nats at T={low:g}, "
                            f"{h_high:.3f} at T={high:g}): it cannot be matched")
        if not h_low < target < h_high:
            raise UserError(f"entropy target {target:.3f} nats is outside what temperatures {low:g}..{high:g} give "
                            f"({min(h_low, h_high):.3f}..{max(h_low, h_high):.3f} nats)")
        weight_low = weight_high = 1.0   # Illinois: the weight of an end's distance from the target
        last_side = None
        while len(probes) < max_probes:
            width = high - low
            if width < MIN_WIDTH:
                raise UserError(f"the samples' entropy jumps over {target:.3f} nats between T={low:.4f} "
                                f"({h_low:.3f}) and T={high:.4f} ({h_high:.3f}): use more samples or a tolerance "
                                f"above {tolerance:g}")
            below, above = (target - h_low) * weight_low, (h_high - target) * weight_high
            guess = low + below / (below + above) * width
            temp = guess if low + 0.05 * width < guess < high - 0.05 * width else (low + high) / 2
            h = probe(temp)
            side = "low" if h < target else "high"
            if side == "low":
                low, h_low, weight_low = temp, h, 1.0
                weight_high = weight_high / 2 if last_side == "low" else 1.0
            else:
                high, h_high, weight_high = temp, h, 1.0
                weight_low = weight_low / 2 if last_side == "high" else 1.0
            last_side = side
    except _Found:
        temp, h = probes[-1]
        return temp, h, probes
    raise UserError(f"no temperature within {tolerance} nats of {target:.3f} after {max_probes} probes "
                    f"(closest {min(probes, key=lambda p: abs(p[1] - target))[1]:.3f}): use more samples or a "
                    "larger tolerance")


class _Found(Exception):
    """A probe hit the target: ends the search."""


def bootstrap_gen_ppl(runs: list[Scored], resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile interval of Gen PPL, resampling the seeds and then the samples within each seed."""
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        nll = tokens = 0.0
        for run in rng.choices(runs, k=len(runs)):
            for i in rng.choices(range(len(run.nll)), k=len(run.nll)):
                nll, tokens = nll + run.nll[i], tokens + run.judged[i]
        values.append(math.exp(nll / max(tokens, 1)))
    values.sort()
    tail = (1 - level) / 2
    return values[int(tail * (resamples - 1))], values[int(math.ceil((1 - tail) * (resamples - 1)))]


@dataclass
class Matched:
    """Gen PPL of one (model, strategy, steps) at the temperature that gives the target entropy."""
    target: float
    tolerance: float
    temperature: float
    entropy: float              # mean over every sample of every seed at that temperature
    gen_ppl: float              # pooled over the seeds (total NLL / total judged tokens)
    ci_low: float               # bootstrap interval over seeds and samples
    ci_high: float
    seeds: list[int]
    per_seed_gen_ppl: list[float]
    per_seed_entropy: list[float]
    probes: list[tuple[float, float]]   # (temperature, pooled entropy) the search tried

    def to_dict(self) -> dict:
        return asdict(self)


def pooled(runs: list[Scored], target: float, tolerance: float, temperature: float, probes) -> Matched:
    low, high = bootstrap_gen_ppl(runs)
    return Matched(target, tolerance, temperature, pooled_entropy(runs),
                   math.exp(sum(sum(r.nll) for r in runs) / sum(sum(r.judged) for r in runs)), low, high,
                   [r.seed for r in runs], [r.gen_ppl for r in runs], [r.entropy for r in runs], list(probes))


def match_entropy(model, request: SampleRequest, target: float, judge, seeds: list[int],
                  tolerance: float = TOLERANCE, temperatures: tuple[float, float] = TEMPERATURE_RANGE) -> Matched:
    """Search the temperature whose samples, over all the seeds, have the target mean entropy (the
    same seeds at every probe), then judge that temperature's samples."""
    if not seeds:
        raise UserError("matched entropy needs at least one seed")
    tried: dict[float, list[Scored]] = {}

    def entropy_at(temp: float) -> float:
        tried[temp] = [sample_scored(model, request, temp, s) for s in seeds]
        return pooled_entropy(tried[temp])

    temp, _, probes = find_temperature(entropy_at, target, tolerance, *temperatures)
    return pooled([r.judge(judge) for r in tried[temp]], target, tolerance, temp, probes)


def entropy_curve(model, request: SampleRequest, temperatures: list[float], judge, seeds: list[int]) -> list[dict]:
    """Gen PPL (with its interval) and entropy at each temperature: the curve a matched comparison reads."""
    out = []
    for temp in temperatures:
        runs = [sample_scored(model, request, temp, s, judge) for s in seeds]
        m = pooled(runs, float("nan"), float("nan"), temp, [])
        out.append({"temperature": temp, "entropy": m.entropy, "gen_ppl": m.gen_ppl,
                    "ci_low": m.ci_low, "ci_high": m.ci_high})
    return out


def validation_chunks(model, length: int, chunks: int = 32, purpose: str = "the entropy target") -> list[list[int]]:
    """The model's validation text cut into `chunks` pieces of `length` ids: real text of the samples'
    length, the yardstick of entropy targets and of the explorer's repetition flag."""
    from toolkit.data import load_data      # deferred: only a real-text yardstick needs the corpus
    try:
        val = load_data(model.cfg.data).val
    except (OSError, ValueError) as e:
        raise UserError(f"the validation text could not be read for {purpose} ({e})") from None
    if val.shape[1] < length:
        raise UserError(f"the validation blocks hold {val.shape[1]} tokens, fewer than the samples' {length} "
                        f"({purpose} needs real text of their length)")
    return [[int(t) for t in row[:length]] for row in val[:chunks]]


def real_text_entropy(model, length: int, chunks: int = 32) -> float:
    """Mean unigram entropy of real text of the samples' length: the `ref` target."""
    rows = validation_chunks(model, length, chunks)
    return sum(unigram_entropy(r) for r in rows) / len(rows)


def entropy_figure(curves: dict[str, tuple[str, list[dict]]], target: float | None = None, ax=None):
    """Gen PPL (log) against mean unigram entropy, one line per label, coloured by its family
    (`curves`: label -> (family, entropy_curve rows)); a dotted vertical line marks a matched target.
    Returns the axes; a new figure when none is given."""
    from toolkit.plotting import family_colour   # deferred: matplotlib is slow to import
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=(6.4, 4), layout="constrained").subplots()
    styles = ["-", "--", ":", "-."]
    for i, (label, (family, rows)) in enumerate(curves.items()):
        rows = sorted(rows, key=lambda r: r["entropy"])
        ax.errorbar([r["entropy"] for r in rows], [r["gen_ppl"] for r in rows],
                    yerr=[[r["gen_ppl"] - r["ci_low"] for r in rows], [r["ci_high"] - r["gen_ppl"] for r in rows]],
                    color=family_colour(family), ls=styles[i % len(styles)], marker="o", ms=4, capsize=2, label=label)
        for r in rows:
            ax.annotate(f"T={r['temperature']:g}", (r["entropy"], r["gen_ppl"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    if target is not None:
        ax.axvline(target, ls=":", color="#555555", lw=1, label=f"matched entropy {target:.2f} nats")
    ax.set(yscale="log", xlabel="mean unigram entropy of the samples (nats)", ylabel="Gen PPL (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    return ax


# -- the command line's part (`python -m toolkit.evaluate --match-entropy H|ref`) -----------------------
def parse_target(raw: str | None, seeds: int, tolerance: float) -> float | str | None:
    """--match-entropy's value: a number of nats, `ref`, or None (not asked); flags checked before loading."""
    if raw is None:
        return None
    if seeds < 1 or not tolerance > 0:
        raise UserError(f"--seeds must be >= 1 and --entropy-tolerance > 0 (got {seeds}, {tolerance})")
    if raw == "ref":
        return raw
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"--match-entropy takes a number of nats or 'ref' (got '{raw}')") from None
    if not value > 0:
        raise UserError(f"--match-entropy must be > 0 nats (got {raw})")
    return value


def matched_rows(model, requests: list[SampleRequest], target: float | str, judge_name: str, protocol: str,
                 seeds: list[int], tolerance: float) -> list[dict]:
    """One matched-entropy row per request (strategy x steps), as `toolkit.evaluate --json` prints them."""
    judge = load_evaluator(judge_name, str(model.device), protocol=protocol, precision=model.precision)
    rows = []
    for req in requests:
        goal = real_text_entropy(model, req.length - req.prompt_length) if target == "ref" else float(target)
        m = match_entropy(model, req, goal, judge, seeds, tolerance)
        rows.append({"sampler": req.sampler, "steps": req.steps, "length": req.length,
                     "num_samples": req.num_samples, "target_source": "ref" if target == "ref" else "value",
                     "evaluator": judge.name, **req.options, **req.sampler_options, **m.to_dict()})
    return rows


def format_matched(rows: list[dict]) -> list[str]:
    """The text form of matched rows: one line each."""
    return [f"{r['sampler']:<12}  steps {r['steps']:>4}  matched entropy {r['entropy']:.3f} (target {r['target']:.3f}"
            f"{' = ref' if r['target_source'] == 'ref' else ''} ± {r['tolerance']:g}) at T={r['temperature']:.3f}  "
            f"gen_ppl {r['gen_ppl']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] over seeds "
            f"{','.join(map(str, r['seeds']))}" for r in rows]
