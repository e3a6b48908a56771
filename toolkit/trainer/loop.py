"""The training loop: AdamW + warmup-cosine + clipping, bf16 autocast, metrics.jsonl, checkpoints, resume.

Runs on CPU, one GPU, or many processes under torchrun (DDP or FSDP2). The pieces read on their
own: one optimizer step (step.py), validation (validation.py), log records (metrics_log.py),
saving and resuming (checkpointing.py), ranks and full state dicts (distributed.py).
"""
from __future__ import annotations

import inspect
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from toolkit.checkpoints import rundir
from toolkit.config import RunConfig
from toolkit.data import load_data
from toolkit.errors import UserError
from toolkit.hardware import resolve_compile, resolve_precision, tune_allocator
from toolkit.lm import build_family
from toolkit.model.attention import resolve_backend
from toolkit.model.backbone import Backbone
from toolkit.model.lora import add_lora
from toolkit.scaling.flops import train_flops_per_sequence
from toolkit.trainer import checkpointing
from toolkit.trainer.distributed import Distributed
from toolkit.trainer.finetune import load_init_weights, save_merged
from toolkit.trainer.guards import BestKeeper, NonFiniteGuard
from toolkit.trainer.metrics_log import LogWindow, initial_record, print_runtime, progress_bar
from toolkit.trainer.step import lr_at, train_step
from toolkit.trainer.validation import validate


class Trainer:
    """Holds one run's pieces (data, family, network, optimizer, ranks) and runs `fit`; the step,
    validation, logging and checkpointing each live in their own module of this package."""

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
        self.precision = resolve_precision(t.precision, self.dist.device)
        self.out = Path(t.out)
        self.step = 0
        self.window = LogWindow()
        self.skipped = 0              # steps skipped for a non-finite loss/gradient (on_nonfinite=skip)
        self.guard = NonFiniteGuard(self.dist.device, stop=t.on_nonfinite == "stop")
        self.saved_step = None        # the step of the last checkpoint written or resumed from
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
        if self.precision == "bf16":
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return nullcontext()

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
                "compile": self.compiled, "torch": torch.__version__}

    def log(self, record: dict) -> None:
        if self.dist.main:
            rundir.append_metrics(self.out, record)

    def validate(self) -> float:
        return validate(self)

    def train_step(self) -> float:
        return train_step(self)

    def save(self) -> None:
        checkpointing.save(self)

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
        resumed = t.resume and checkpointing.try_resume(self)
        if self.dist.main and not resumed:   # nothing to resume from (killed before the first save): start clean
            rundir.remove_metrics(self.out)
        if self.dist.main:
            info = self.describe()
            rundir.write_run_info(self.out, self.cfg, info)
            if t.progress:
                print_runtime(info)
        if not resumed:
            self.log(initial_record(self.validate()))
        return resumed

    def fit(self) -> dict:
        try:
            return self._fit()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _fit(self) -> dict:
        t = self.cfg.train
        self.start()
        self.net.train()
        progress = progress_bar(t.max_steps, self.step, self.cfg.family) if t.progress and self.dist.main else None
        self.window.start()
        end = min(t.max_steps, t.stop_at) if t.stop_at > 0 else t.max_steps   # stop_at pauses, the schedule stays
        while self.step < end:
            loss = self.train_step()   # a device tensor: nothing below reads it until a log point
            self.step += 1
            self.window.add(loss, self.tokens_per_step)
            if progress is not None:
                progress.update(1)
            last = self.step == end
            evaluate = self.step % t.eval_every == 0 or last
            log = self.step % t.log_every == 0 or evaluate
            save = self.step % t.save_every == 0 or last
            if log or save:   # the host reads the non-finite flags before anything is logged or written
                self.guard.check(self)
            if log:
                self.dist.wait()   # tokens/s and elapsed_s count finished work, not queued work
                record = self.window.record(self.step, self.step * self.tokens_per_step,
                                            self.step * t.batch_size * self.flops_per_seq, lr_at(self.step - 1, self.cfg))
                if self.skipped:
                    record["skipped_steps"] = self.skipped
                if evaluate:
                    record["val_nelbo"] = round(self.validate(), 6)
                self.log(record)
                if evaluate:
                    checkpointing.save_best(self, record["val_nelbo"])
                if progress is not None and record["train_loss"] is not None:
                    progress.set_postfix(loss=f"{record['train_loss']:.3f}")
                self.window.start()
            if save:
                self.save()
                self.window.restart_clock()
        self.guard.check(self)
        if progress is not None:
            progress.close()
        if self.lora is not None and self.dist.main and self.step == t.max_steps:
            save_merged(self.lora, self.out / "merged", self.cfg)
        self.dist.close()
        return {"step": self.step, "out": str(self.out)}
