"""Evaluate a checkpoint: `python -m toolkit.evaluate CHECKPOINT --metrics nelbo,gen_ppl,entropy,throughput`.

- nelbo: validation NELBO per token (antithetic MC over t, with its standard error; AR exact)
  and the perplexity bound exp(NELBO).
- gen_ppl: perplexity of the model's samples under an evaluator LM (--evaluator: a toolkit
  checkpoint, default the embedded `ar`, or a locally cached Hugging Face causal LM).
- entropy: mean unigram entropy (nats) of the samples; low values flag repetitive text.
- throughput: generated tokens/s for the sampling settings, after a warm-up run.
- choice: multiple-choice accuracy on a local jsonl file (--choice-file).
--steps accepts a comma list (8,16,32) to sweep the sample-based metrics for a Pareto plot.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace

from toolkit.errors import UserError, cli_main
from toolkit.sample import ArgParser, add_sampling_args, load_model, parse_options
from toolkit.sampling import SampleRequest

METRICS = ("nelbo", "gen_ppl", "entropy", "throughput", "choice")
SAMPLE_METRICS = ("gen_ppl", "entropy", "throughput")


def parse_list(raw: str, name: str, cast=str) -> list:
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if not items:
        raise UserError(f"--{name} is empty")
    try:
        return [cast(x) for x in items]
    except ValueError:
        raise UserError(f"--{name}: expected a comma list of {cast.__name__} (got '{raw}')") from None


def evaluate(model, metrics: list[str], requests: list[SampleRequest], evaluator: str = "ar",
             mc_samples: int = 32, sequences: int = 16, seed: int = 0, repeats: int = 1,
             choice_file: str | None = None, gen_ppl_protocol: str = "reference") -> dict:
    """All requested metrics as one JSON-ready dict (what the CLI prints)."""
    from toolkit.evaluation import dataset_nelbo, gen_ppl, load_evaluator, mean_entropy, throughput
    from toolkit.evaluation.likelihood import validation_blocks

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})")
    if "choice" in metrics and not choice_file:
        raise UserError("the choice metric needs --choice-file FILE.jsonl")
    for r in requests:
        model.check_request(r)
    judge = load_evaluator(evaluator, str(model.device), protocol=gen_ppl_protocol) if "gen_ppl" in metrics else None  # fail early
    out: dict = {"checkpoint": model.path, "family": model.name}
    if "nelbo" in metrics:
        out["nelbo"] = dataset_nelbo(model, validation_blocks(model, sequences), mc_samples, seed).to_dict()
    if "choice" in metrics:
        from toolkit.evaluation.choice import choice_accuracy, read_items
        out["choice"] = choice_accuracy(model, read_items(choice_file), mc_samples, seed)
    if any(m in metrics for m in SAMPLE_METRICS):
        out["sampling"] = []
        for req in requests:
            row = {"steps": req.steps, "length": req.length, "num_samples": req.num_samples,
                   "top_p": req.top_p, "temperature": req.temperature, **req.options}
            if "gen_ppl" in metrics or "entropy" in metrics:
                texts, last = model.generate(req)
                row["nfe"] = last.nfe
                if "entropy" in metrics:
                    row["entropy"] = mean_entropy(last.tokens.tolist())
                if "gen_ppl" in metrics:
                    row.update(gen_ppl(judge, texts))
            if "throughput" in metrics:
                tp = throughput(model, replace(req, seed=req.seed + 1), repeats=repeats)
                row.update({"tokens_per_s": tp.tokens_per_s, "seconds": tp.seconds, "nfe": tp.nfe})
            out["sampling"].append(row)
    return out


def format_text(res: dict) -> str:
    lines = [f"{res['family']}  {res['checkpoint']}"]
    if "nelbo" in res:
        n = res["nelbo"]
        err = "exact" if n["exact"] else f"± {n['se']:.4f}"
        rel = "=" if n["exact"] else "<="
        lines.append(f"nelbo/token {n['nelbo']:.4f} ({err})  ppl {rel} {n['ppl_bound']:.2f}"
                     f"  [{n['sequences']} sequences, {n['tokens']} tokens]")
    if "choice" in res:
        c = res["choice"]
        lines.append(f"choice accuracy {c['accuracy']:.3f} (norm {c['accuracy_norm']:.3f}) on {c['questions']} questions")
    for row in res.get("sampling", []):
        parts = [f"steps {row['steps']:>4}"]
        if "gen_ppl" in row:
            parts.append(f"gen_ppl {row['gen_ppl']:.2f}")
        if "entropy" in row:
            parts.append(f"entropy {row['entropy']:.3f}")
        if "tokens_per_s" in row:
            parts.append(f"{row['tokens_per_s']:.1f} tok/s")
        parts.append(f"nfe {row['nfe']}")
        lines.append("  ".join(parts))
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m toolkit.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--metrics", default="nelbo,gen_ppl,entropy,throughput")
    ap.add_argument("--steps", default="32", help="reverse steps, or a comma list to sweep")
    add_sampling_args(ap)
    ap.add_argument("--evaluator", default="ar", help="gen_ppl judge: toolkit checkpoint/embedded name or HF model")
    ap.add_argument("--gen-ppl-protocol", default="reference", choices=("reference", "bos"),
                    help="Hugging Face judges: reference (the tokenizer's own special tokens, first id of a"
                         " window unscored, as the paper) or bos (one BOS per window, every text id scored)")
    ap.add_argument("--mc-samples", type=int, default=32, help="Monte Carlo t draws per sequence (antithetic)")
    ap.add_argument("--sequences", type=int, default=16, help="validation blocks for nelbo")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs for throughput (after one warm-up)")
    ap.add_argument("--choice-file", default=None, help="jsonl of {context, choices, answer}")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    metrics = parse_list(a.metrics, "metrics")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:   # before loading anything
        raise UserError(f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})")
    steps = parse_list(a.steps, "steps", int)
    model = load_model(a.checkpoint, a.device, a.threads)
    base = SampleRequest(num_samples=a.num_samples, length=a.length or model.max_length, steps=steps[0],
                         temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                         use_cache=not a.no_cache, options=parse_options(a.option))
    requests = [replace(base, steps=s) for s in steps]
    res = evaluate(model, metrics, requests, a.evaluator, a.mc_samples, a.sequences, a.seed, a.repeats,
                   a.choice_file, a.gen_ppl_protocol)
    print(json.dumps(res) if a.json else format_text(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
