"""The trainer: AdamW + warmup-cosine + clipping, bf16 autocast, metrics.jsonl, checkpoints, resume.

Runs on CPU, one GPU, or many processes under torchrun (DDP). Every random draw of a
training step comes from a generator seeded by (seed, step, chunk), and the data order is a
pure function of (seed, step): a resumed run repeats an uninterrupted one exactly, and a
global batch split into the same chunks gives the same loss on 1 process or on N.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from toolkit.checkpoint import load_train_state, save_checkpoint
from toolkit.config import RunConfig
from toolkit.data import batch_indices, load_data
from toolkit.errors import UserError
from toolkit.finetune import load_init_weights, save_merged
from toolkit.lora import add_lora
from toolkit.lm import build_family
from toolkit.model.attention import resolve_backend
from toolkit.model.backbone import Backbone
from toolkit.scaling.flops import train_flops_per_sequence
from toolkit.schedule import antithetic_times, stratified_times

TIMING_KEYS = ("tokens_per_s", "elapsed_s", "mfu")   # vary between runs; everything else is reproducible


def lr_at(step: int, cfg: RunConfig) -> float:
    """Linear warmup (max(1% of steps, 100) by default, capped at 10%) then cosine to min_lr."""
    o, total = cfg.optim, cfg.train.max_steps
    warmup = o.warmup_steps if o.warmup_steps >= 0 else min(max(total // 100, 100), total // 10)
    if step < warmup:
        return o.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = o.lr * o.min_lr_ratio
    return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def local_chunk(rank: int, grad_accum: int, micro: int) -> int:
    """Which chunk of the global batch rank `rank` processes in micro-step `micro`.

    The global batch is cut into world * grad_accum equal chunks; rank r takes chunks
    r*grad_accum .. r*grad_accum + grad_accum - 1, so ranks never share a sample and
    (world=1, grad_accum=2) processes exactly the chunks that (world=2, grad_accum=1) does.
    """
    return rank * grad_accum + micro


def chunk_rows(rows: torch.Tensor, chunk: int, chunk_size: int) -> torch.Tensor:
    """Rows (data indices) of one chunk of the global batch."""
    return rows[chunk * chunk_size: (chunk + 1) * chunk_size]


def step_generator(seed: int, step: int, chunk: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + step) * 1_009 + chunk) % (2 ** 63))
    return g


class Distributed:
    """torchrun's environment, or a single process."""

    def __init__(self, device_pref: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda") or device_pref.startswith("cuda")
        if self.world > 1 and device_pref.startswith("cuda:"):
            raise UserError(f"device={device_pref} pins every rank to one GPU: use device=cuda (rank r gets cuda:LOCAL_RANK)")
        if device_pref.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device={device_pref} but no CUDA device is available")
        if cuda:
            self.device = torch.device(device_pref if ":" in device_pref else f"cuda:{self.local_rank}")
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.owns_group = False
        if self.world > 1 and not dist.is_initialized():
            if cuda:  # binding the device up front lets NCCL set up its communicators eagerly
                dist.init_process_group("nccl", device_id=self.device)
            else:
                dist.init_process_group("gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t)

    def all_mean(self, x: float) -> float:
        return self.all_sum(x) / self.world

    def barrier(self):
        if self.world > 1:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self):
        """Tear down the process group this helper created (not one the caller set up)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


class Trainer:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.dist = Distributed(t.device)
        chunks = self.dist.world * t.grad_accum
        if t.batch_size % chunks:
            raise UserError(f"batch_size ({t.batch_size}) must divide into world size x grad_accum ({chunks})")
        self.chunk_size = t.batch_size // chunks
        # one process per node tokenizes (and caches) first; the others then read its cache
        leader = self.dist.local_rank == 0
        if not leader:
            self.dist.barrier()
        self.data = load_data(cfg.data)
        if leader:
            self.dist.barrier()
        cfg.model.vocab_size = self.data.tokenizer.get_vocab_size()
        self.family = build_family(cfg, self.data.tokenizer)
        torch.manual_seed(t.seed)
        self.net = Backbone(cfg.model).to(self.dist.device)
        if t.init:   # fine-tuning: start from a checkpoint's weights
            load_init_weights(self.net, t.init, cfg.model.vocab_size)
        # LoRA: adapters only, the backbone's own weights stay frozen
        self.lora = add_lora(self.net, t) if t.lora_rank else None
        self.net.backend = resolve_backend(cfg.model.attention, self.dist.device)
        self.model = self._wrap(self.net)
        self.opt = self._optimizer()   # after wrapping: FSDP2 replaces parameters by sharded ones
        self.precision = t.precision if t.precision != "auto" else ("bf16" if self.dist.device.type == "cuda" else "fp32")
        self.out = Path(t.out)
        self.step = 0
        self.loss_window = [0.0, 0]   # sum and count of train losses since the last log line
        self.elapsed = 0.0
        m = cfg.model
        self.flops_per_seq = train_flops_per_sequence(m.n_layers, m.d_model, m.vocab_size, cfg.data.seq_len)

    def _wrap(self, net):
        """DDP or FSDP2 (under torchrun), then torch.compile if asked.

        The state-dict names of `net` never change (no `module.`/`_orig_mod.` prefixes):
        checkpoints are written from `self.net`, whatever the wrapping.
        """
        model, compile_ = net, self.cfg.train.compile
        if self.sharded:
            from torch.distributed.fsdp import fully_shard
            # the root FSDP module is not resharded after forward, so the in-place SUBS edit
            # of its output logits is harmless; its warning about views would only be noise
            warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
            for block in net.blocks:
                if compile_:
                    block.compile()   # in place: per-block graphs, FSDP hooks stay outside them
                fully_shard(block)
            fully_shard(net)
            return model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            # no buffer broadcast: the only buffers are rotary/time tables every rank builds alike.
            # Eso-LM (alpha_0 < 1) calls the network twice per loss; DDP copes because each
            # parameter's gradient is summed by autograd before its (single) reduction hook runs.
            params = inspect.signature(DistributedDataParallel.__init__).parameters   # renamed in torch 2.13
            no_sync_buffers = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
            model = DistributedDataParallel(
                net, device_ids=[self.dist.device] if self.dist.device.type == "cuda" else None, **no_sync_buffers)
        if compile_:
            model = torch.compile(model)   # after DDP, so DDP's graph splitting applies
        return model

    def _optimizer(self):
        o = self.cfg.optim
        trainable = [p for p in self.net.parameters() if p.requires_grad]   # LoRA freezes the rest
        decay = [p for p in trainable if p.dim() >= 2]
        no_decay = [p for p in trainable if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # -- state -------------------------------------------------------------------------------
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    def save(self):
        from toolkit.distributed_state import full_state_dict
        state = full_state_dict(self.net, self.opt, self.sharded)
        if self.dist.main:
            train_state = {"step": torch.tensor(self.step), "optimizer": state["optimizer"],
                           "loss_window": torch.tensor(self.loss_window[0], dtype=torch.float64),
                           "loss_count": torch.tensor(self.loss_window[1]),
                           "elapsed": torch.tensor(self.elapsed, dtype=torch.float64)}
            save_checkpoint(self.checkpoint_dir(), self.cfg, _StateView(state["model"]), self.cfg.data.tokenizer or None,
                            train_state, extra={"step": self.step, "tokens": self.step * self.tokens_per_step})
        self.dist.barrier()

    def try_resume(self) -> bool:
        ckpt = self.checkpoint_dir()
        if not (ckpt / "state.pt").is_file():
            return False
        from safetensors.torch import load_file
        from toolkit.distributed_state import load_full_state_dict
        state = load_train_state(ckpt)
        load_full_state_dict(self.net, self.opt, load_file(str(ckpt / "model.safetensors")), state["optimizer"],
                             self.sharded)
        self.step = int(state["step"])
        self.loss_window = [float(state["loss_window"]), int(state["loss_count"])]
        self.elapsed = float(state["elapsed"])
        if self.dist.main:
            self._truncate_metrics(self.step)
        return True

    def _truncate_metrics(self, step: int):
        """Drop lines written after the checkpoint (the run died before saving again)."""
        f = self.out / "metrics.jsonl"
        if not f.is_file():
            return
        keep = [line for line in f.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        f.write_text("".join(line + "\n" for line in keep))

    @property
    def sharded(self) -> bool:
        return self.cfg.train.fsdp and self.dist.world > 1

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.train.batch_size * self.cfg.data.seq_len

    # -- loop ----------------------------------------------------------------------------------
    def log(self, record: dict):
        if self.dist.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def validate(self) -> float:
        """Mean NELBO per token on fixed validation blocks, with fixed antithetic t draws.

        Batch i (rows i*chunk .. (i+1)*chunk, its own seeded generator) runs on rank i mod world,
        so the figure does not depend on the number of ranks.
        """
        self.net.eval()
        t, val, val_mask = self.cfg.train, self.data.val, self.data.val_mask
        total, covered = 0.0, 0.0
        rounds = -(-t.eval_batches // self.dist.world)
        for r in range(rounds):
            i = r * self.dist.world + self.dist.rank
            if i >= t.eval_batches and not self.sharded:
                break
            # under FSDP every rank must run the same number of forwards (they all-gather
            # parameters): a rank without a batch left repeats one and discards the result
            b = i % t.eval_batches
            rows = torch.arange(b * self.chunk_size, (b + 1) * self.chunk_size) % len(val)
            x0 = val[rows].to(self.dist.device)
            mask = val_mask[rows].to(self.dist.device) if val_mask is not None else None
            g = step_generator(t.seed + 17, 0, b, self.dist.device)
            with self.autocast():
                nelbo = self.family.nelbo(self.net, x0, antithetic_times(len(rows), g, self.dist.device), g,
                                          loss_mask=mask)
            if i < t.eval_batches:
                if mask is None:
                    total += float(nelbo.sum()) / x0.shape[1]
                else:   # fine-tuning: nats per response token
                    total, covered = total + float(nelbo.sum()), covered + float(mask.sum())
        self.net.train()
        if val_mask is not None:
            return self.dist.all_sum(total) / max(self.dist.all_sum(covered), 1.0)
        return self.dist.all_sum(total) / (t.eval_batches * self.chunk_size)

    def train_step(self) -> float:
        t = self.cfg.train
        lr = lr_at(self.step, self.cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        rows = batch_indices(len(self.data.train), t.batch_size, self.step, t.seed)
        times = stratified_times(t.batch_size, step_generator(t.seed, self.step, -1, "cpu"))
        total = 0.0
        for micro in range(t.grad_accum):
            chunk = local_chunk(self.dist.rank, t.grad_accum, micro)
            picked = chunk_rows(rows, chunk, self.chunk_size)
            x0 = self.data.train[picked].to(self.dist.device, non_blocking=True)
            mask = None if self.data.train_mask is None else self.data.train_mask[picked].to(self.dist.device)
            t_chunk = chunk_rows(times, chunk, self.chunk_size).to(self.dist.device)
            g = step_generator(t.seed, self.step, chunk, self.dist.device)
            last_micro = micro == t.grad_accum - 1
            sync = nullcontext()
            if self.sharded:   # FSDP2: reduce-scatter gradients only on the last micro-step
                self.net.set_requires_gradient_sync(last_micro)
            elif self.dist.world > 1 and not last_micro:
                sync = self.model.no_sync()
            with sync, self.autocast():
                loss = self.family.loss(self.model, x0, t_chunk, g, loss_mask=mask) / t.grad_accum
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return self.dist.all_mean(total)

    def describe(self) -> dict:
        """How this run executes (device, ranks, attention backend...): printed and saved."""
        return {"world_size": self.dist.world, "device": str(self.dist.device),
                "parallel": "fsdp2" if self.sharded else ("ddp" if self.dist.world > 1 else "none"),
                "attention": self.net.backend, "precision": self.precision,
                "compile": bool(self.cfg.train.compile), "torch": torch.__version__}

    def fit(self) -> dict:
        t = self.cfg.train
        # every rank checks (same filesystem), so a refusal stops them all, not only rank 0
        if self.out.exists() and (self.out / "metrics.jsonl").exists() and not t.resume:
            raise UserError(f"{self.out} already holds a run: pass resume=true to continue it, or another out=")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        resumed = t.resume and self.try_resume()
        if self.dist.main:
            self.cfg.save(self.out / "config.json")
            info = self.describe()
            (self.out / "runtime.json").write_text(json.dumps(info, indent=2) + "\n")
            if t.progress:
                print("run: " + ", ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)
        if not resumed:
            self.log({"step": 0, "tokens": 0, "flops": 0.0, "val_nelbo": round(self.validate(), 6)})
        self.net.train()
        progress = None
        if t.progress and self.dist.main:
            from tqdm import tqdm
            progress = tqdm(total=t.max_steps, initial=self.step, desc=f"{self.cfg.family}", unit="step",
                            dynamic_ncols=True, leave=False)
        tic, tokens_since = time.perf_counter(), 0
        while self.step < t.max_steps:
            loss = self.train_step()
            self.step += 1
            tokens_since += self.tokens_per_step
            self.loss_window[0] += loss
            self.loss_window[1] += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.3f}")
            last = self.step == t.max_steps
            evaluate = self.step % t.eval_every == 0 or last
            if self.step % t.log_every == 0 or evaluate:
                now = time.perf_counter()
                self.elapsed += now - tic
                record = {"step": self.step, "tokens": self.step * self.tokens_per_step,
                          "flops": self.step * t.batch_size * self.flops_per_seq,
                          "train_loss": round(self.loss_window[0] / self.loss_window[1], 6),
                          "lr": lr_at(self.step - 1, self.cfg),
                          "tokens_per_s": round(tokens_since / max(now - tic, 1e-9), 1),
                          "elapsed_s": round(self.elapsed, 3)}
                if evaluate:
                    record["val_nelbo"] = round(self.validate(), 6)
                self.log(record)
                self.loss_window = [0.0, 0]
                tic, tokens_since = time.perf_counter(), 0
            if self.step % t.save_every == 0 or last:
                self.save()
                tic = time.perf_counter()
        if progress is not None:
            progress.close()
        if self.lora is not None and self.dist.main:
            save_merged(self.lora, self.out / "merged", self.cfg)
        self.dist.close()
        return {"step": self.step, "out": str(self.out)}


class _StateView:
    """Adapter so save_checkpoint can take a plain state dict."""

    def __init__(self, state):
        self._state = state

    def state_dict(self):
        return self._state
