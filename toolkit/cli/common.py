"""What every command line of the toolkit shares: the one-line-error parser, the sampling flags,
and loading a model for a command."""
from __future__ import annotations

import argparse

import torch

from toolkit.checkpoints import load
from toolkit.errors import UserError
from toolkit.options import parse_pairs, seed_argument
from toolkit.samplers import DEFAULT as DEFAULT_STRATEGY, names as strategy_names


def parse_options(items: list[str]) -> dict[str, str]:
    """The CLIs' repeated `--option KEY=VALUE` flags as a dict."""
    return parse_pairs(items, "--option")


class ArgParser(argparse.ArgumentParser):
    """argparse, but a bad argument is a one-line `error: ...` (exit 2) like every other CLI error."""

    def error(self, message):
        raise UserError(message)


def add_sampling_args(ap: argparse.ArgumentParser, multi_sampler: bool = False) -> None:
    """The sampling flags `sample` and `evaluate` share (their --steps differ, so each adds its own)."""
    ap.add_argument("--length", type=int, default=None, help="tokens per sample (default: the model's context)")
    ap.add_argument("--num-samples", type=int, default=4)
    ap.add_argument("--seed", type=seed_argument, default=0, help="0 .. 2**63 - 1")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (1 = off)")
    ap.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="family or sampler option (see the list below; sampler options: --sampler list)")
    if multi_sampler:
        ap.add_argument("--sampler", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                        help=f"decoding strategy to compare (repeatable; default {DEFAULT_STRATEGY}; docs/samplers.md)")
    else:
        ap.add_argument("--sampler", default=DEFAULT_STRATEGY,
                        help=f"decoding strategy: {', '.join(strategy_names())} (default {DEFAULT_STRATEGY};"
                             " 'list' shows them)")
    ap.add_argument("--no-cache", action="store_true", help="disable the KV / no-change caches")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")


def parse_list(raw: str, name: str, cast=str) -> list:
    """'8,16,32' -> [8, 16, 32] for a comma-list flag `--name`."""
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if not items:
        raise UserError(f"--{name} is empty")
    try:
        return [cast(x) for x in items]
    except ValueError:
        raise UserError(f"--{name}: expected a comma list of {cast.__name__} (got '{raw}')") from None


def load_model(path: str, device: str, threads: int):
    if threads > 0:
        torch.set_num_threads(threads)
    if device != "cpu" and device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} requested but CUDA is not available")
    return load(path, device)
