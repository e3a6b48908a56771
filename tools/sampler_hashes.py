"""Hash every embedded family's samples under every strategy it supports (a refactor's bit-identity check).

    python tools/sampler_hashes.py OUT.json            # write the hashes
    python tools/sampler_hashes.py OUT.json --check    # compare with OUT.json; non-zero exit on a difference

Per (family, strategy, steps, seed, prompt, KV cache): a sha256 over every Step's tokens, changed mask, nfe
and row_nfe (when present), so a change in any step of the trace shows, not only the final text.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

import toolkit
from toolkit import samplers

FAMILIES = ("ar", "mdlm", "duo", "esolm")


def trace_hash(model, request) -> str:
    h = hashlib.sha256()
    for step in model.sample(request):
        h.update(step.tokens.cpu().numpy().tobytes())
        h.update(step.changed.cpu().numpy().tobytes())
        h.update(str(step.nfe).encode())
        if step.row_nfe is not None:
            h.update(step.row_nfe.cpu().numpy().tobytes())
    return h.hexdigest()


def all_hashes() -> dict[str, str]:
    torch.set_num_threads(1)
    out = {}
    for name in FAMILIES:
        model = toolkit.load(name)
        prompt = model.encode("The")[:2]
        for strategy in samplers.supported(model.family):
            for steps in (4, 8):
                for seed in (0, 1):
                    for with_prompt, cache in ((False, True), (True, True), (True, False)):
                        req = toolkit.SampleRequest(num_samples=2, length=16, steps=steps, seed=seed,
                                                    prompt=prompt if with_prompt else [], sampler=strategy, use_cache=cache,
                                                    sampler_options={"block_size": 8} if strategy == "block" else {})
                        out[f"{name}/{strategy}/steps={steps}/seed={seed}/prompt={with_prompt}/cache={cache}"] = trace_hash(model, req)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="the JSON file to write, or to compare with under --check")
    ap.add_argument("--check", action="store_true", help="compare with PATH; non-zero exit on a difference")
    a = ap.parse_args(argv)
    path, check = a.path, a.check
    if check and not Path(path).is_file():
        print(f"error: --check needs the hashes file {path} (write it first without --check)", file=sys.stderr)
        return 2
    got = all_hashes()
    if not check:
        with open(path, "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
        print(f"{len(got)} hashes written to {path}")
        return 0
    with open(path) as f:
        want = json.load(f)
    bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    for k in bad:
        print(f"DIFFERS: {k}")
    print(f"{len(want)} hashes checked: {len(bad)} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
