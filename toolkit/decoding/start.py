"""Where every masked decoding run starts: the seeded generator, the initial ids, and [B, Q] positions
tensors padded with PAD (the decoder contract of toolkit/decoding/__init__.py)."""
from __future__ import annotations

import torch

from toolkit.sample_request import SampleRequest

PAD = -1   # "no position" in a [B, Q] positions tensor whose rows hold different counts


def seeded_start(request: SampleRequest, fill_id: int, device):
    """(the request's seeded CPU generator, masked_tokens_init's [B, L] ids and fixed mask): every
    sampler's set-up, so that one seed gives one sequence of draws whatever the strategy."""
    gen = torch.Generator(device="cpu").manual_seed(request.seed)
    return (gen, *masked_tokens_init(request, fill_id, device))


def masked_tokens_init(request: SampleRequest, fill_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] ids all `fill_id` except fixed positions (prompt/infill); and the fixed mask."""
    b, n = request.num_samples, request.length
    z = torch.full((b, n), fill_id, dtype=torch.long, device=device)
    fixed = torch.zeros(b, n, dtype=torch.bool, device=device)
    if request.prompts:   # one prefix per sample
        p = request.prompt_length
        z[:, :p], fixed[:, :p] = request.prompt_rows(device), True
    for pos, tok in request.fixed_positions().items():
        z[:, pos], fixed[:, pos] = tok, True
    return z, fixed


def scatter_rows(target: torch.Tensor, positions: torch.Tensor, values) -> torch.Tensor:
    """`target` [B, L] with `values` written at `positions` [B, K]; PAD entries write nothing."""
    n = target.shape[1]
    wide = torch.cat([target, target[:, :1]], 1)          # column n absorbs the PAD writes
    values = values if torch.is_tensor(values) else torch.full(positions.shape, values, dtype=target.dtype,
                                                                device=target.device)
    return wide.scatter(1, torch.where(positions == PAD, n, positions), values)[:, :n]

