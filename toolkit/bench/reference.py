"""The paper's own backbone side by side: `models/dit.py` of a clone of s-sahoo/scaling-dllms.

Nothing of it is copied into this repository: the benchmark imports the file from the folder
the user names (`--reference DIR`), loads this toolkit's weights into it (the state-dict layout
is the same), checks that both compute the same logits, and times both on the same input.
Importing dit.py sets global flags (TF32, inductor tuning); they are restored right after, so
the toolkit's own figures are not changed by having measured the reference.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from toolkit.bench.timing import best_seconds, peak_memory_gib, reset_peak_memory
from toolkit.config import ModelConfig
from toolkit.errors import UserError

NEEDS = ("einops", "omegaconf", "huggingface_hub")   # what dit.py imports beyond torch


@contextmanager
def _global_flags_kept():
    import torch._inductor.config as inductor   # deferred: the compiler's modules load only when asked
    kept = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision(),
            torch.backends.cudnn.benchmark, inductor.coordinate_descent_tuning, inductor.triton.cudagraphs)
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, precision, torch.backends.cudnn.benchmark,
         inductor.coordinate_descent_tuning, inductor.triton.cudagraphs) = kept
        torch.set_float32_matmul_precision(precision)


def load_dit(directory: str | Path):
    """The reference's models/dit.py as a module; a UserError naming what is missing otherwise."""
    path = Path(directory).expanduser() / "models" / "dit.py"
    if not path.is_file():
        raise UserError(f"--reference {directory}: no models/dit.py there (expected a clone of s-sahoo/scaling-dllms)")
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"the reference's dit.py needs {', '.join(missing)}: pip install {' '.join(missing)}")
    spec = importlib.util.spec_from_file_location("reference_dit", path)
    module = importlib.util.module_from_spec(spec)
    with _global_flags_kept():
        try:
            spec.loader.exec_module(module)
        except Exception as e:   # a different revision of the file, an incompatible torch...
            raise UserError(f"cannot import {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    sys.modules.setdefault("reference_dit", module)
    return module


def reference_backbone(dit, ours: torch.nn.Module, m: ModelConfig, causal: bool = False):
    """The reference DiT of the same shape holding `ours`' weights."""
    config = {"model": {"length": m.max_seq_len, "hidden_size": m.d_model, "cond_dim": m.cond_dim,
                        "n_heads": m.n_heads, "n_blocks": m.n_layers, "dropout": 0.0, "scale_by_sigma": False},
              "algo": {"causal_attention": causal, "adaLN": True}}
    device = next(ours.parameters()).device
    ref = dit.DiT(config, m.vocab_size).to(device)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    if unexpected or set(missing) - {"rotary_emb.inv_freq"}:
        raise UserError(f"the reference's state dict differs from the toolkit's: missing {missing}, unexpected {unexpected}")
    return ref.train(ours.training)


def max_relative_difference(ours, ref, tokens, sigma) -> float:
    with torch.no_grad():
        a, b = ours(tokens, sigma).float(), ref(tokens, sigma).float()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def cpu_backward_error(ref, tokens, sigma) -> str | None:
    """The reference cannot train on a CPU (FlexAttention has no CPU backward): the error it raises,
    or None if this torch can do it after all."""
    try:
        ref(tokens[:1, :16], sigma[:1]).float().square().mean().backward()
    except Exception as e:   # noqa: BLE001 - any failure is the finding we report
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    finally:
        ref.zero_grad(set_to_none=True)
    return None


def reference_train_step(ref, vocab_size: int, batch: int, seq_len: int, device: torch.device, budget_s: float) -> dict:
    """Tokens/s of the reference's MDLM training step as its code runs it on a GPU: its compiled
    FlexAttention, its own bf16 autocast, the full [B, L, V] output head, fused AdamW."""
    mask_id = vocab_size - 1
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda")
    g = torch.Generator(device=device).manual_seed(0)

    def step():
        x0 = torch.randint(0, vocab_size - 1, (batch, seq_len), device=device, generator=g)
        t = torch.rand(batch, device=device, generator=g).clamp(1e-3, 1)
        moved = torch.rand(batch, seq_len, device=device, generator=g) < t[:, None]
        z = torch.where(moved, mask_id, x0)
        logits = ref(z, t).float()
        logits[..., mask_id] = float("-inf")
        nll = -logits.log_softmax(-1).gather(-1, x0[..., None])[..., 0]
        loss = (nll * moved).sum() / moved.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    reset_peak_memory(device)
    seconds = best_seconds(step, device, warmup=3, repeats=3, budget_s=budget_s)
    return {"tokens_per_s": batch * seq_len / seconds, "step_s": seconds, "peak_memory_gib": peak_memory_gib(device)}
