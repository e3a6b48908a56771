"""Evaluate a checkpoint: `python -m toolkit.evaluate CHECKPOINT --metrics nelbo,gen_ppl,entropy,throughput`.

- nelbo: validation NELBO per token (antithetic MC over t, with its standard error; AR exact)
  and the perplexity bound exp(NELBO).
- gen_ppl: perplexity of the model's samples under an evaluator LM (--evaluator: a toolkit
  checkpoint, default the embedded `ar`, or a locally cached Hugging Face causal LM).
- entropy: mean unigram entropy (nats) of the samples; low values flag repetitive text.
- throughput: generated tokens/s for the sampling settings, after a warm-up run.
- choice: multiple-choice accuracy on a local jsonl file (--choice-file).
- accuracy: generative task accuracy (--task arith|gsm8k|FILE.jsonl): one sampled answer per
  problem, its final number (`#### N`) against the gold one; 95% Wilson interval, NFE, tokens/s;
  every generation is written to --generations (default: next to the checkpoint), resumable.
--match-entropy H|ref: Gen PPL at the temperature whose samples' mean unigram entropy is H nats
(ref: the validation text's, at the samples' length), over --seeds seeds with a bootstrap interval;
docs/evaluation.md.
--steps accepts a comma list (8,16,32) to sweep the sample-based metrics for a Pareto plot;
--sampler NAME[:KEY=VALUE,...] (repeatable) compares decoding strategies at the same step counts
(NFE = steps for ancestral, confidence with k=0, remdm and block; see docs/samplers.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.cli.common import ArgParser, add_sampling_args, load_model, parse_list, parse_options
from toolkit.cli.usage import sampling_options_text
from toolkit.errors import UserError, cli_main
from toolkit.evaluation.generation import DEFAULT_EVALUATOR
from toolkit.evaluation.matched_entropy import TOLERANCE, format_matched, matched_rows, parse_target
from toolkit.evaluation.suite import check_metrics, evaluate, format_text
from toolkit.samplers.requests import sweep_requests
from toolkit.sample_request import SampleRequest


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m toolkit.evaluate", description=__doc__.splitlines()[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=sampling_options_text())
    ap.add_argument("checkpoint")
    ap.add_argument("--metrics", default=None, help="comma list (default: nelbo,gen_ppl,entropy,throughput;"
                    " accuracy alone with --task)")
    ap.add_argument("--steps", default="32", help="reverse steps, or a comma list to sweep")
    add_sampling_args(ap, multi_sampler=True)
    ap.add_argument("--evaluator", default=DEFAULT_EVALUATOR, help="gen_ppl judge: toolkit checkpoint/embedded name or HF model")
    ap.add_argument("--gen-ppl-protocol", default="reference", choices=("reference", "bos"),
                    help="Hugging Face judges: reference (the tokenizer's own special tokens, first id of a"
                         " window unscored, as the paper) or bos (one BOS per window, every text id scored)")
    ap.add_argument("--mc-samples", type=int, default=32, help="Monte Carlo t draws per sequence (antithetic)")
    ap.add_argument("--sequences", type=int, default=16, help="validation blocks for nelbo")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs for throughput (after one warm-up)")
    ap.add_argument("--choice-file", default=None, help="jsonl of {context, choices, answer}")
    ap.add_argument("--task", default=None, help="accuracy: copy, arith, arith-hard (toolkit/data/arithmetic.py),"
                    " gsm8k, or a JSONL of question/answer rows")
    ap.add_argument("--problems", type=int, default=500, help="accuracy: how many problems (0 = all)")
    ap.add_argument("--batch-size", type=int, default=64, help="accuracy: problems sampled together")
    ap.add_argument("--generations", default=None, help="accuracy: JSONL of every generation (resumed if present)")
    ap.add_argument("--prompt-field", default="question")
    ap.add_argument("--response-field", default="answer")
    ap.add_argument("--arith-steps", type=int, default=None, help="arithmetic levels: operations per problem"
                    " (default: the level's own)")
    ap.add_argument("--max-operand", type=int, default=None, help="arithmetic levels: largest operand (default: the level's own)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                    help="what the model and a toolkit judge compute in (default fp32: reported numbers are the"
                         " same on every machine; auto: as sampling resolves it; docs/precision.md)")
    ap.add_argument("--match-entropy", "--entropy-target", dest="match_entropy", default=None, metavar="H|ref",
                    help="Gen PPL at matched entropy: H nats, or ref (the validation text's entropy)")
    ap.add_argument("--seeds", type=int, default=3, help="matched entropy: seeds judged at the found temperature")
    ap.add_argument("--entropy-tolerance", type=float, default=TOLERANCE, help="matched entropy: nats")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    default_metrics = "accuracy" if a.task else "" if a.match_entropy else "nelbo,gen_ppl,entropy,throughput"
    metrics = parse_list(a.metrics or default_metrics, "metrics") if (a.metrics or default_metrics) else []
    target = parse_target(a.match_entropy, a.seeds, a.entropy_tolerance)
    if target is not None and a.temperature != 1.0:
        raise UserError("--temperature is what --match-entropy searches: give one or the other")
    if target is None and (a.seeds != 3 or a.entropy_tolerance != TOLERANCE):
        raise UserError("--seeds and --entropy-tolerance apply to --match-entropy only")
    if a.problems < 0 or a.batch_size <= 0:
        raise UserError("--problems must be >= 0 and --batch-size > 0")
    check_metrics(metrics)   # before loading anything
    steps = parse_list(a.steps, "steps", int)
    model = load_model(a.checkpoint, a.device, a.threads)
    model.precision = a.precision
    base = SampleRequest(num_samples=a.num_samples, length=model.max_length if a.length is None else a.length, steps=steps[0],
                         temperature=a.temperature, top_p=a.top_p, seed=a.seed,
                         use_cache=not a.no_cache)
    requests = sweep_requests(model.family, base, a.sampler, parse_options(a.option), steps)
    task = None
    if a.task:
        generations = a.generations or str(Path(model.path or ".") / f"generations-{Path(a.task).stem}.jsonl")
        task = {"task": a.task, "problems": a.problems, "batch_size": a.batch_size, "generations": generations,
                "prompt_field": a.prompt_field, "response_field": a.response_field,
                "arith_steps": a.arith_steps, "max_operand": a.max_operand}
    res = evaluate(model, metrics, requests, a.evaluator, a.mc_samples, a.sequences, a.seed, a.repeats,
                   a.choice_file, a.gen_ppl_protocol, task)
    if target is not None:
        res["matched_entropy"] = matched_rows(model, requests, target, a.evaluator, a.gen_ppl_protocol,
                                              list(range(a.seed, a.seed + a.seeds)), a.entropy_tolerance)
    print(json.dumps(res) if a.json else "\n".join([format_text(res), *format_matched(res.get("matched_entropy", []))]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
