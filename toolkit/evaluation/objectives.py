"""Looking inside the training objectives: what a family's forward process does to a text,
each family's loss on one batch, and the Monte Carlo spread of the NELBO and of its gradient.

The spread is what separates the objectives the paper compares: the NELBO of a diffusion
family is a one-draw estimate over diffusion times t, and its variance depends on how the
draws are spread (i.i.d., antithetic pairs, stratified over the batch) and on the weight the
objective puts on each t (MDLM's 1/t ELBO weight vs the low-variance cross-entropy).
"""
from __future__ import annotations

import copy
import dataclasses

import torch

from toolkit.errors import UserError
from toolkit.options import check, require_choice
from toolkit.schedule import EPS, antithetic_times, stratified_times


def iid_times(batch: int, generator=None, device="cpu", t_min: float = EPS, t_max: float = 1.0):
    """Independent uniform t in [t_min, t_max] (no variance reduction)."""
    return t_min + (t_max - t_min) * torch.rand(batch, generator=generator, device=device)


TIME_SCHEMES = {"iid": iid_times, "antithetic": antithetic_times, "stratified": stratified_times}


def noised_views(model, text: str, times, seed: int = 0) -> list[dict]:
    """One row per t: the text drawn from q(z_t | x0) (▒ = [MASK]); [] for a family without noise (AR)."""
    x0 = torch.tensor([model.encode(text)])
    if x0.numel() == 0:
        raise UserError("noised_views: the text is empty")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in times:
        z = model.family.forward_sample(x0, torch.tensor([float(t)]), g)
        if z is None:
            return []
        rows.append({"family": model.family.name, "t": float(t),
                     "alpha_t": float(model.family.schedule.alpha(torch.tensor(float(t)))),
                     "noised": float((z != x0).float().mean()), "text": model.decode(z[0], show_mask=True)})
    return rows


@torch.no_grad()
def nelbo_draws(model, x0: torch.Tensor, draws: int, scheme: str = "antithetic", seed: int = 0) -> torch.Tensor:
    """[draws] per-token NELBO estimates of the batch x0, each with fresh times drawn by `scheme`."""
    require_choice("time scheme", scheme, TIME_SCHEMES)
    model.net.eval()
    out = []
    for k in range(draws):
        g = torch.Generator().manual_seed(seed + k)
        t = TIME_SCHEMES[scheme](x0.shape[0], g)
        out.append(float(model.family.nelbo(model.net, x0, t, g).sum()) / model.family.scored_tokens(x0))
    return torch.tensor(out, dtype=torch.float64)


def with_options(family, **changes):
    """A copy of `family` with some options changed (e.g. loss='low_var'); the original is untouched."""
    fam = copy.copy(family)
    try:
        fam.options = dataclasses.replace(family.options, **changes)
    except TypeError as e:
        raise UserError(f"family {family.name}: {e}") from None
    check(fam.options)
    return fam


def loss_gradients(net, family, x0: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """[draws, params] gradients of the family's training loss on x0, one per draw of (t, noise).

    Draw k uses seed + k for its stratified times and its noise, so two objectives given the same
    seed see exactly the same corrupted batches and differ only in how they weight them.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    grads = []
    for k in range(draws):
        g = torch.Generator().manual_seed(seed + k)
        t = stratified_times(x0.shape[0], g)
        loss = family.loss(net, x0, t, g)
        grads.append(torch.cat([gr.flatten() for gr in torch.autograd.grad(loss, params, allow_unused=False)]))
    return torch.stack(grads).double()


def gradient_noise(grads: torch.Tensor) -> dict:
    """Spread of gradient draws [K, P]: total variance E||g - mean||^2, squared norm of the mean,
    and their ratio (noise-to-signal: scale-free, so objectives of different scale compare)."""
    if grads.shape[0] < 2:
        raise UserError("gradient_noise needs at least 2 draws")
    mean = grads.mean(0)
    var = float(((grads - mean) ** 2).sum(1).sum() / (grads.shape[0] - 1))
    signal = float(mean.pow(2).sum())
    return {"variance": var, "mean_sq_norm": signal, "noise_to_signal": var / signal if signal > 0 else float("inf")}
