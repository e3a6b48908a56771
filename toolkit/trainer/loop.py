"""The training loop: AdamW + warmup-cosine + clipping, bf16 autocast, metrics.jsonl, checkpoints, resume.

Runs on CPU, one GPU, or many processes under torchrun (DDP or FSDP2). The Trainer's pieces are
set up once; what changes as it trains is one TrainState (state.py), which only the Trainer's
methods (and the non-finite guard's check) change and which state.pt saves and restores whole.
The per-step arithmetic (learning rate, batch chunks, seeded draws) is in step.py, log records
in metrics_log.py, ranks and full state dicts in distributed.py.
"""
from __future__ import annotations

import inspect
import math
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from toolkit import faults
from toolkit.checkpoints import rundir
from toolkit.config import RunConfig
from toolkit.data import batch_indices, load_data
from toolkit.errors import UserError
from toolkit.hardware import Probe, autocast, best_of, choose_precision, resolve_compile, tune_allocator
from toolkit.lm import build_family
from toolkit.model.attention import resolve_backend
from toolkit.model.backbone import Backbone, fuses_head
from toolkit.model.lora import add_lora
from toolkit.scaling.flops import train_flops_per_sequence
from toolkit.schedule import antithetic_times, stratified_times
from toolkit.trainer.distributed import Distributed, full_state_dict, load_full_state_dict
from toolkit.trainer.finetune import load_init_weights, save_merged
from toolkit.trainer.guards import BestKeeper, NonFiniteGuard, keep_history
from toolkit.trainer.metrics_log import initial_record, print_runtime, progress_bar
from toolkit.trainer.state import TrainState
from toolkit.trainer.step import chunk_rows, local_chunk, lr_at, step_generator, to_device


class Trainer:
    """One run: its pieces (data, family, network, optimizer, ranks), set up once, and its
    progress (`self.state`, a TrainState), which `fit` advances step by step."""

    def __init__(self, cfg: RunConfig, data=None):
        """`data`: an already built PackedData (benchmarks feed synthetic tokens); default cfg.data's."""
        self.cfg = cfg
        t = cfg.train
        tune_allocator()
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
        self.data = load_data(cfg.data) if data is None else data
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
        self.compiled = resolve_compile(t.compile, self.dist.device)
        self.model = self._wrap(self.net)
        self.opt = self._optimizer()   # after wrapping: FSDP2 replaces parameters by sharded ones
        # one process times its own step; ranks of a torchrun job must agree, so they take the device's answer
        probe = self._step_probe() if self.dist.world == 1 else None
        self.precision_choice = choose_precision(t.precision, self.dist.device, probe)
        self.precision = self.precision_choice.precision
        self.out = Path(t.out)
        self.state = TrainState()
        self.guard = NonFiniteGuard(self.dist.device, stop=t.on_nonfinite == "stop")
        self.best = BestKeeper(self.out / rundir.BEST) if t.keep_best else None
        self.lock = None
        m = cfg.model
        self.flops_per_seq = train_flops_per_sequence(m.n_layers, m.d_model, m.vocab_size, cfg.data.seq_len)

    def _wrap(self, net):
        """DDP or FSDP2 (under torchrun), then torch.compile if asked.

        The state-dict names of `net` never change (no `module.`/`_orig_mod.` prefixes):
        checkpoints are written from `self.net`, whatever the wrapping.
        """
        model, compile_ = net, self.compiled
        if self.sharded:
            from torch.distributed.fsdp import fully_shard   # deferred: FSDP2 is only needed under torchrun
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
            from torch.nn.parallel import DistributedDataParallel   # deferred: only needed under torchrun
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
        """AdamW, fused: one kernel per step, and its `found_inf` lets the non-finite guard skip a
        bad update on the device (step.py) instead of reading the loss on the host every step.
        Under FSDP2 the fused kernel runs on the DTensor shards and takes the 0-dim `found_inf`
        as replicated (tests/test_distributed.py resumes a run on 2 FSDP2 ranks)."""
        o = self.cfg.optim
        trainable = [p for p in self.net.parameters() if p.requires_grad]   # LoRA freezes the rest
        decay = [p for p in trainable if p.dim() >= 2]
        no_decay = [p for p in trainable if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=True)

    def autocast(self):
        return autocast(self.dist.device, self.precision)

    def _step_probe(self) -> Probe:
        """What `precision=auto` times on a CPU with native bf16: one forward and backward of the
        backbone on a micro-batch of this run's shape (random ids; the weights are not changed)."""
        m, net, device = self.cfg.model, self.net, self.dist.device
        rows, length = self.chunk_size, self.cfg.data.seq_len
        tokens = torch.randint(0, m.vocab_size, (rows, length), generator=torch.Generator().manual_seed(0)).to(device)
        sigma = torch.full((rows,), 0.5, device=device)

        def seconds(precision: str) -> float:
            def step():
                with autocast(device, precision):
                    out = net(tokens, sigma, targets=tokens) if fuses_head(net) else net(tokens, sigma).logsumexp(-1)
                out.float().mean().backward()
            took = best_of(step, reps=2)
            net.zero_grad(set_to_none=True)
            return took
        return Probe("train step", f"d{m.d_model} L{m.n_layers} H{m.n_heads} V{m.vocab_size} {rows}x{length}", seconds)

    @property
    def sharded(self) -> bool:
        return self.cfg.train.fsdp and self.dist.world > 1

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.train.batch_size * self.cfg.data.seq_len

    def describe(self) -> dict:
        """How this run executes (device, ranks, attention backend...): printed and saved."""
        return {"world_size": self.dist.world, "device": str(self.dist.device),
                "parallel": "fsdp2" if self.sharded else ("ddp" if self.dist.world > 1 else "none"),
                "attention": self.net.backend, "precision": self.precision,
                "precision_reason": self.precision_choice.reason,
                "compile": self.compiled, "torch": torch.__version__}

    def log(self, record: dict) -> None:
        if self.dist.main:
            rundir.append_metrics(self.out, record)

    # -- one optimizer step ---------------------------------------------------------------------
    def train_step(self) -> torch.Tensor:
        """One optimizer step over the global batch of step `state.step`, then `state.step += 1`.

        Returns its mean loss over all ranks as a 0-dim device tensor (NaN for a skipped step),
        without waiting for the device: nothing here reads a device tensor on the host, and the
        non-finite guard acts through the fused optimizer's `found_inf` (guards.NonFiniteGuard).
        """
        t, device, step = self.cfg.train, self.dist.device, self.state.step
        lr = lr_at(step, self.cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.family.begin_train_step(step, self.net)   # a curriculum's clock, a distillation teacher
        rows = batch_indices(len(self.data.train), t.batch_size, step, t.seed)
        times = stratified_times(t.batch_size, step_generator(t.seed, step, -1, "cpu"))
        total = torch.zeros((), dtype=torch.float64, device=device)
        for micro in range(t.grad_accum):
            chunk = local_chunk(self.dist.rank, t.grad_accum, micro)
            picked = chunk_rows(rows, chunk, self.chunk_size)
            x0 = to_device(self.data.train[picked], device)
            # fine-tuning rows carry a loss mask; pre-training calls the family exactly as before
            masked = ({} if self.data.train_mask is None
                      else {"loss_mask": to_device(self.data.train_mask[picked], device)})
            t_chunk = to_device(chunk_rows(times, chunk, self.chunk_size), device)
            g = step_generator(t.seed, step, chunk, device)
            last_micro = micro == t.grad_accum - 1
            sync = nullcontext()
            if self.sharded:   # FSDP2: reduce-scatter gradients only on the last micro-step
                self.net.set_requires_gradient_sync(last_micro)
            elif self.dist.world > 1 and not last_micro:
                sync = self.model.no_sync()
            with sync, self.autocast():
                loss = self.family.loss(self.model, x0, t_chunk, g, **masked) / t.grad_accum
            loss.backward()
            total += loss.detach()   # summed in float64, as the host sum was
            faults.point("train.backward")
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.optim.grad_clip)
        if hasattr(norm, "full_tensor"):   # FSDP2 returns a DTensor
            norm = norm.full_tensor()
        # one all-reduce (queued, not waited for) carries the loss sum and both flags of every rank
        sums = torch.stack([total, (~torch.isfinite(total)).double(), (~torch.isfinite(norm)).double()])
        sums = self.dist.all_sum_(sums)
        skip = self.guard.flag(step, sums[1] > 0, sums[2] > 0)
        if self.opt.defaults.get("fused"):   # the kernel skips the update (and its step count) where skip is 1
            self.opt.found_inf, self.opt.grad_scale = skip, None
            self.opt.step()
        elif not skip.item():   # an optimizer without `found_inf` (swapped in by a caller): a host read
            self.opt.step()
        faults.point("train.optimizer")
        self.opt.zero_grad(set_to_none=True)
        self.state.step = step + 1
        return torch.where(skip > 0, torch.nan, sums[0] / self.dist.world)

    # -- validation -------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float:
        """Mean NELBO per token on fixed validation blocks, with fixed antithetic t draws.

        Batch i (rows i*chunk .. (i+1)*chunk, its own seeded generator) runs on rank i mod world,
        so the figure does not depend on the number of ranks.
        """
        self.net.eval()
        t, val, val_mask, dist = self.cfg.train, self.data.val, self.data.val_mask, self.dist
        # summed on the device in float64 and read once at the end (a read per batch would stall it)
        total = torch.zeros((), dtype=torch.float64, device=dist.device)
        covered = torch.zeros((), dtype=torch.float64, device=dist.device)
        for r in range(-(-t.eval_batches // dist.world)):
            i = r * dist.world + dist.rank
            if i >= t.eval_batches and not self.sharded:
                break
            # under FSDP every rank must run the same number of forwards (they all-gather
            # parameters): a rank without a batch left repeats one and discards the result
            b = i % t.eval_batches
            rows = torch.arange(b * self.chunk_size, (b + 1) * self.chunk_size) % len(val)
            x0 = to_device(val[rows], dist.device)
            mask = to_device(val_mask[rows], dist.device) if val_mask is not None else None
            g = step_generator(t.seed + 17, 0, b, dist.device)
            with self.autocast():
                nelbo = self.family.nelbo(self.net, x0, antithetic_times(len(rows), g, dist.device), g,
                                          **({} if mask is None else {"loss_mask": mask}))
            if i < t.eval_batches:
                if mask is None:
                    total += nelbo.sum().double() / x0.shape[1]
                else:   # fine-tuning: nats per response token
                    total += nelbo.sum().double()
                    covered += mask.sum().double()
            faults.point("eval.batch")
        self.net.train()
        total, covered = torch.stack([total, covered]).tolist()
        if val_mask is not None:
            return dist.all_sum(total) / max(dist.all_sum(covered), 1.0)
        return dist.all_sum(total) / (t.eval_batches * self.chunk_size)

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the run's checkpoint (weights, config, tokenizer, state.pt); collective under FSDP2."""
        full = full_state_dict(self.net, self.opt, self.sharded)
        step = self.state.step
        if self.dist.main:
            saved = {**self.state.state_dict(), "optimizer": full["optimizer"], "family": self.family.train_state()}
            ckpt = rundir.checkpoint_dir(self.out)
            rundir.save_checkpoint(ckpt, self.cfg, full["model"], self.cfg.data.tokenizer or None,
                                   saved, extra={"step": step, "tokens": step * self.tokens_per_step})
            if self.cfg.train.keep_last > 1:
                keep_history(ckpt, self.out / rundir.HISTORY, step, self.cfg.train.keep_last)
        self.state.saved_step = step
        self.dist.barrier()

    def save_best(self, val: float) -> None:
        """keep_best=true: the weights of the lowest validation NELBO so far, in RUN/best."""
        if self.best is None or not (math.isfinite(val) and val < self.state.best_val):
            return
        full = full_state_dict(self.net, self.opt, self.sharded)
        if self.dist.main:
            self.best.save(self.cfg, full["model"], self.cfg.data.tokenizer or None, self.state.step, val)
        self.state.best_val, self.state.best_step = val, self.state.step
        self.dist.barrier()

    def resume(self) -> bool:
        """Restore weights, optimizer and TrainState from the run's checkpoint, if it has one;
        then drop the metrics lines written after that checkpoint (the run died before saving again)."""
        ckpt = rundir.checkpoint_dir(self.out)
        if self.dist.main:   # a save killed half-way: finish or undo it before reading anything
            for d in (ckpt, self.out / rundir.BEST):
                note = rundir.recover_checkpoint(d)
                if note:
                    print(f"resume: {note}", file=sys.stderr)
        self.dist.barrier()
        if not rundir.has_train_state(ckpt):
            return False
        problem = rundir.checkpoint_problem(ckpt)
        if problem:
            raise UserError(f"cannot resume from {ckpt}: {problem}")
        saved = rundir.load_train_state(ckpt)
        load_full_state_dict(self.net, self.opt, rundir.load_weights(ckpt), saved["optimizer"], self.sharded)
        self.state.load_state_dict(saved)
        if self.best is not None and "best_val" not in saved:   # written before TrainState kept the best
            self.state.best_val, self.state.best_step = self.best.saved()
        self.family.load_train_state(saved.get("family", {}), self.net)
        if self.dist.main and self.cfg.train.keep_last > 1:   # a save killed mid-swap never reached its history copy
            keep_history(ckpt, self.out / rundir.HISTORY, self.state.step, self.cfg.train.keep_last)
        if self.dist.main:
            rundir.truncate_metrics(self.out, self.state.step)
        return True

    def check_nonfinite(self) -> None:
        """The host's read of the non-finite flags (at log and save points): stop, or count skips."""
        self.guard.check(self.state, rundir.checkpoint_dir(self.out), self.dist.main)

    def start(self) -> bool:
        """Create (or resume) the run directory; True when resumed from a checkpoint."""
        t = self.cfg.train
        # every rank checks (same filesystem), so a refusal stops them all, not only rank 0
        rundir.check_out(self.out, self.cfg.to_dict(), t.resume, t.overwrite, defaults=self.cfg.defaults_dict())
        if self.dist.main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create out={self.out}: {e.strerror or e}") from None
            self.lock = rundir.RunLock(self.out).acquire()
            if t.overwrite:
                rundir.clear_run(self.out)
        self.dist.barrier()
        resumed = t.resume and self.resume()
        if self.dist.main and not resumed:   # nothing to resume from (killed before the first save): start clean
            rundir.remove_metrics(self.out)
        if self.dist.main:
            info = self.describe()
            rundir.write_run_info(self.out, self.cfg, info)
            if t.progress:
                print_runtime(info)
        if not resumed:
            self.log({**initial_record(self.validate()), "precision": self.precision})
        return resumed

    def fit(self) -> dict:
        try:
            return self._fit()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _fit(self) -> dict:
        t, state = self.cfg.train, self.state
        self.start()
        self.net.train()
        progress = progress_bar(t.max_steps, state.step, self.cfg.family) if t.progress and self.dist.main else None
        state.window.start()
        end = min(t.max_steps, t.stop_at) if t.stop_at > 0 else t.max_steps   # stop_at pauses, the schedule stays
        while state.step < end:
            loss = self.train_step()   # a device tensor: nothing below reads it until a log point
            state.window.add(loss, self.tokens_per_step)
            if progress is not None:
                progress.update(1)
            step = state.step
            last = step == end
            evaluate = step % t.eval_every == 0 or last
            log = step % t.log_every == 0 or evaluate
            save = step % t.save_every == 0 or last
            if log or save:   # the host reads the non-finite flags before anything is logged or written
                self.check_nonfinite()
            if log:
                self.dist.wait()   # tokens/s and elapsed_s count finished work, not queued work
                record = state.window.record(step, step * self.tokens_per_step,
                                             step * t.batch_size * self.flops_per_seq, lr_at(step - 1, self.cfg))
                if state.skipped:
                    record["skipped_steps"] = state.skipped
                if evaluate:
                    record["val_nelbo"] = round(self.validate(), 6)
                self.log(record)
                if evaluate:
                    self.save_best(record["val_nelbo"])
                if progress is not None and record["train_loss"] is not None:
                    progress.set_postfix(loss=f"{record['train_loss']:.3f}")
                state.window.start()
            if save:
                self.save()
                state.window.restart_clock()
        self.check_nonfinite()
        if progress is not None:
            progress.close()
        if self.lora is not None and self.dist.main and state.step == t.max_steps:
            save_merged(self.lora, self.out / "merged", self.cfg)
        self.dist.close()
        return {"step": state.step, "out": str(self.out)}
