"""Compute the embedded demo models' card: size, tokens seen, validation NELBO/PPL, and Gen PPL,
entropy and speed of their samples at a few step counts.

    python -m training.recipes.model_card --out gui/MODEL_CARD.md      # ~a few minutes on one CPU thread

Every figure is measured here from the checkpoints themselves, so the card can be regenerated
after retraining (`training/recipes/train_demo_models.sh` ends by doing so).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import toolkit
from toolkit.errors import cli_main
from toolkit.evaluation.likelihood import dataset_nelbo, validation_blocks
from toolkit.evaluation.metrics import Samples, score_samples
from toolkit.families import REGISTRY
from toolkit.options import parse_spec
from toolkit.sample_request import SampleRequest

NAMES = tuple(REGISTRY)   # the embedded demo models are named after their families


def param_counts(model) -> dict:
    """Total and non-embedding parameters, the latter as the paper's reference counts them
    (everything but the input embedding table: the output head counts)."""
    return {"total": model.net.num_params(False), "non_embedding": model.net.num_params(True)}


def sample_stats(model, evaluator, steps: int, length: int, samples: int, seed: int, options=None) -> dict:
    """Gen PPL (under `evaluator`), mean unigram entropy and tokens/s of unconditional samples."""
    req = SampleRequest(num_samples=samples, length=length, steps=steps, seed=seed, options=dict(options or {}))
    tic = time.perf_counter()
    texts, last = model.generate(req)
    seconds = time.perf_counter() - tic
    scores = score_samples(Samples(texts, last.tokens.tolist(), last.nfe, seconds, samples * length), evaluator=evaluator)
    return {"options": dict(options or {}), "requested": steps, "steps": last.step,
            **{k: scores[k] for k in ("nfe", "gen_ppl", "entropy", "tokens_per_s")}}


def parse_variant(text: str) -> tuple[str, dict]:
    """'duo:tail=last_step' -> ('duo', {'tail': 'last_step'}): extra sampling settings to report."""
    return parse_spec(text, "--variant")


def compute(names=NAMES, evaluator_name: str = "ar", step_counts=(8, 32, 128), samples: int = 8,
            val_sequences: int = 32, mc_samples: int = 8, seed: int = 0, variants=()) -> dict:
    evaluator = toolkit.load(evaluator_name)
    card = {"evaluator": evaluator_name, "samples": samples, "val_sequences": val_sequences,
            "mc_samples": mc_samples, "models": []}
    for name in names:
        m = toolkit.load(name)
        meta = json.loads((Path(m.path) / "config.json").read_text())
        val = validation_blocks(m, val_sequences)
        est = dataset_nelbo(m, val, mc_samples, seed)
        counts = param_counts(m)
        entry = {"name": name, "family": m.family.name, "preset": m.cfg.model.preset, "params": counts,
                 "config": {k: meta.get(k) for k in ("options", "model", "data", "optim", "train")},
                 "tokens": meta.get("tokens"), "steps_trained": meta.get("step"), "seq_len": m.max_length,
                 "val_nelbo": est.nelbo, "val_se": est.se, "val_ppl": est.ppl, "exact": est.exact, "samples": []}
        length = m.max_length
        settings = [{}] + [opts for v_name, opts in map(parse_variant, variants) if v_name == name]
        for options in settings:
            for steps in (step_counts if not m.family.exact_likelihood else (length,)):
                entry["samples"].append(sample_stats(m, evaluator, steps, length, samples, seed, options))
        card["models"].append(entry)
        if name == evaluator_name:      # reference: real validation text under the same evaluator
            texts = [m.decode(row) for row in val[:samples]]
            real = score_samples(Samples(texts, val[:samples].tolist()), ("gen_ppl", "entropy"), evaluator)
            card["data"] = {"gen_ppl": real["gen_ppl"], "entropy": real["entropy"]}
    return card


def markdown(card: dict) -> str:
    lines = ["| model | family | params (total / non-emb.) | tokens seen | tokens per non-emb. param | "
             "val NELBO (nats/token) | val PPL |", "|---|---|---|---|---|---|---|"]
    for e in card["models"]:
        p = e["params"]
        tok = e["tokens"] or 0
        bound = "" if e["exact"] else " (bound)"
        lines.append(f"| `{e['name']}` | {e['family']} | {p['total'] / 1e6:.2f}M / {p['non_embedding'] / 1e6:.3f}M | "
                     f"{tok / 1e6:.2f}M | {tok / p['non_embedding']:.0f} | {e['val_nelbo']:.3f} ± {e['val_se']:.3f} | "
                     f"{e['val_ppl']:.1f}{bound} |")
    lines += ["", f"Samples: {card['samples']} unconditional sequences of the full context, temperature 1, "
              f"Gen PPL under the embedded `{card['evaluator']}` model, entropy = mean unigram entropy "
              "(nats) per sample, tokens/s on one CPU thread of a shared machine (indicative only).", "",
              "Steps: those asked for, and those taken (AR takes one per token; Duo adds the reference's greedy "
              "tail at t = 1e-5, one network evaluation, unless `tail=last_step` or `tail=none`; Eso-LM adds one "
              "per token left to its sequential phase). Protocols: Gen PPL is scored by the embedded AR model with "
              "its own protocol (a BOS, then every token), val NELBO per token over all L tokens; imported "
              "checkpoints are scored with the reference's protocols (docs/methods.md).", "",
              "| model | steps asked | steps taken | NFE | Gen PPL | entropy | tokens/s |",
              "|---|---|---|---|---|---|---|"]
    low = 0.75 * card["data"]["entropy"] if "data" in card else 0.0
    for e in card["models"]:
        for s in e["samples"]:
            label = f"`{e['name']}`" + "".join(f" ({k}={v})" for k, v in s.get("options", {}).items())
            if e["name"] == card["evaluator"]:
                label += " (self-scored)"
            flag = " ⚠" if s["entropy"] < low else ""
            lines.append(f"| {label} | {s.get('requested', s['steps'])} | {s['steps']} | {s['nfe']} | {s['gen_ppl']:.1f} | {s['entropy']:.2f}{flag} | "
                         f"{s['tokens_per_s']:,.0f} |")
    if "data" in card:
        d = card["data"]
        lines.append(f"| validation text | – | – | – | {d['gen_ppl']:.1f} | {d['entropy']:.2f} | – |")
        lines += ["", "⚠ entropy below 3/4 of real text's: the samples are repetitive, and their low Gen PPL "
                  "is the known failure mode of the metric, not better text."]
    return "\n".join(lines) + "\n"


def header(card: dict) -> str:
    """The card's prose, filled from the checkpoints' own configs (so it cannot go stale)."""
    models = card["models"]
    first = models[0]
    cfg = first["config"]
    m, t = cfg["model"], cfg["train"]
    opts = "; ".join(f"`{e['name']}` trained with " + ", ".join(f"{k} = {v}" for k, v in e["config"]["options"].items())
                     for e in models if e["config"].get("options"))
    ratio = min((e["tokens"] or 0) / e["params"]["non_embedding"] for e in models)
    return f"""# Embedded demo models

One checkpoint per family ships in `toolkit/assets/models/` so that `python -m gui` works offline:
{", ".join(f"`{e['name']}`" for e in models)}. (A fifth, `duo-distilled`, is `duo` after 150 steps of
consistency distillation: a sharper Duo, not a better one: at matched entropy its teacher has the lower Gen PPL
at every step count (studies/duo_accelerators/); it is kept as an example of a distilled checkpoint.) All share one recipe (`training/recipes/demo-*.yaml`): the
{m["preset"]} backbone ({m["n_layers"]} layers, d = {m["d_model"]}, {m["n_heads"]} heads, {m["cond_dim"]}-wide time
embedding), {cfg["data"]["seq_len"]}-token blocks of the embedded Austen corpus, {t["max_steps"]} steps of
{t["batch_size"]} sequences ({(first["tokens"] or 0) / 1e6:.2f}M tokens), AdamW lr {cfg["optim"]["lr"]:g} with warmup and
cosine decay, one CPU thread. Family options: {opts or "none"}. Reproduce the models (and this card) with
`bash training/recipes/train_demo_models.sh`.

"Non-emb." counts every parameter except the input embedding table, as the paper's reference code
does (the output head counts; the {m["vocab_size"]:,}-id vocabulary is most of a model this small); on that
count every model saw at least {ratio:.1f} training tokens per parameter. These are tiny models trained for minutes: the
text is Austen-flavoured word salad, and the figures below compare the families; they are not
for quoting against the paper. Val NELBO is measured on {card["val_sequences"]} validation blocks (Monte
Carlo over t with {card["mc_samples"]} antithetic draws for the diffusion families, ± one standard error;
exact for AR).

"""


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m training.recipes.model_card", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the markdown card here (default: print it)")
    ap.add_argument("--json", default=None, help="also write the raw figures as JSON")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", action="append", default=None,
                    help="also report a model with sampling options, e.g. duo:tail=last_step (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = args.variant if args.variant is not None else ["duo:tail=last_step", "duo:tail=none"]
    card = compute(step_counts=tuple(args.steps), samples=args.samples, variants=variants)
    text = header(card) + markdown(card)
    if args.json:
        Path(args.json).write_text(json.dumps(card, indent=2) + "\n")
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
