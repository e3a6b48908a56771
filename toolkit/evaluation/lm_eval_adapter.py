"""lm-evaluation-harness adapter: every toolkit family as an `lm_eval` model named `dlm-toolkit`.

    python -m toolkit.evaluation.lm_eval_adapter run --model dlm-toolkit \
        --model_args pretrained=runs/x,mc_samples=128 --tasks piqa,arc_easy

Log-likelihoods follow the paper's protocol (toolkit.evaluation.choice): AR exact, the
diffusion families -NELBO of [context + continuation] with antithetic Monte Carlo. The
harness is optional: without it the class still works on (context, continuation) tuples.
"""
from __future__ import annotations

import sys

import torch

import toolkit

from toolkit.evaluation.choice import loglikelihood
from toolkit.evaluation.generation import DEFAULT_EVALUATOR
from toolkit.evaluation.likelihood import text_nll
from toolkit.sample_request import SampleRequest

try:
    from lm_eval.api.model import LM as _Base
    from lm_eval.api.registry import register_model
except ImportError:  # the toolkit works without the harness
    _Base, register_model = object, None

NAME = "dlm-toolkit"


def _args(request):
    return request.args if hasattr(request, "args") else tuple(request)


class ToolkitLM(_Base):
    def __init__(self, pretrained: str = DEFAULT_EVALUATOR, device: str = "cpu", mc_samples: int = 64, seed: int = 0,
                 steps: int = 0, check_greedy: bool = True, batch_size=None, **_ignored):
        if _Base is not object:
            super().__init__()
        device = str(device or "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():   # the harness defaults to cuda
            print(f"warning: {device} is not available, using cpu", file=sys.stderr)
            device = "cpu"
        self.model = toolkit.load(str(pretrained), device)
        self.mc_samples, self.seed, self.steps = int(mc_samples), int(seed), int(steps)
        self.check_greedy = str(check_greedy).lower() not in ("false", "0", "no")

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for req in requests:
            context, continuation = _args(req)[:2]
            out.append(loglikelihood(self.model, context, continuation, self.mc_samples, self.seed,
                                     check_greedy=self.check_greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood (or -NELBO) of whole texts, in windows of the model's context."""
        out = []
        for req in requests:
            ids = self.model.encode(_args(req)[0])
            out.append(-text_nll(self.model, ids, self.mc_samples, self.seed)[0] if ids else 0.0)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (temperature 0 unless asked) generation after the context, cut at any stop string."""
        out = []
        for req in requests:
            context, kwargs = _args(req)[:2]
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n_new = int(kwargs.get("max_gen_toks", 64))
            n_new = max(1, min(n_new, self.model.max_length - 1))
            ctx = self.model.encode(context)[-(self.model.max_length - n_new):]
            temp = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            req_ = SampleRequest(num_samples=1, length=len(ctx) + n_new, steps=self.steps or n_new,
                                 temperature=temp, seed=self.seed, prompt=ctx)
            _, last = self.model.generate(req_)
            text = self.model.decode(last.tokens[0, len(ctx):])
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            out.append(text)
        return out


if register_model is not None:
    ToolkitLM = register_model(NAME, "dlm_toolkit")(ToolkitLM)


def main() -> int:
    """Run the harness' own command line with this adapter registered."""
    if register_model is None:
        print("error: lm-evaluation-harness is not installed (pip install 'dlm-toolkit[eval]')", file=sys.stderr)
        return 2
    from lm_eval.__main__ import cli_evaluate   # deferred: optional (the [eval] extra)
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
