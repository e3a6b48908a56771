"""Data-parallel training under torchrun (gloo on CPU) matches one process on the same global batch.

The two torchrun launches take ~20 s each on a busy 2-core machine; everything else is fast.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.resolve import resolve
from toolkit.data.packing import batch_indices
from toolkit.trainer.distributed import named_optimizer_state, positional_optimizer_state
from toolkit.trainer import TIMING_KEYS, Trainer, chunk_rows, local_chunk

ROOT = Path(__file__).resolve().parents[1]
# constant lr (no warmup, no decay) so a run stopped at step 2 and resumed equals an uninterrupted one
# fp32: these are equalities between two computations (one process against two ranks), exact only in fp32
COMMON = ["model=cpu-xxs", "seq_len=32", "batch_size=4", "log_every=1", "eval_every=2", "eval_batches=3",
          "lr=3e-3", "warmup_steps=0", "min_lr_ratio=1", "progress=false", "save_every=2", "precision=fp32"]


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def single(out: Path, *args: str) -> list[dict]:
    torch.set_num_threads(1)
    Trainer(resolve([*COMMON, f"out={out}", *args])).fit()
    return metrics(out)


def torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training.train", *COMMON, f"out={out}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_same_curve(a: list[dict], b: list[dict]):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys(), (ra, rb)
        for k in ra:   # train_loss is None for a window of skipped steps only; precision is a name
            exact = None in (ra[k], rb[k]) or isinstance(ra[k], str)
            assert ra[k] == rb[k] if exact else ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (k, ra, rb)


# -- sharding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("world,accum", [(1, 1), (1, 4), (2, 1), (2, 2), (4, 2), (8, 1)])
def test_ranks_get_disjoint_chunks_covering_the_batch(world, accum):
    batch = 16
    rows = batch_indices(100, batch, step=3, seed=5)
    size = batch // (world * accum)
    per_rank = [torch.cat([chunk_rows(rows, local_chunk(r, accum, m), size) for m in range(accum)])
                for r in range(world)]
    for r, mine in enumerate(per_rank):
        assert len(mine) == batch // world
        assert len(set(mine.tolist())) == len(mine)                      # no repeat within a rank
        for other in per_rank[r + 1:]:
            assert not set(mine.tolist()) & set(other.tolist())          # nothing shared across ranks
    assert sorted(torch.cat(per_rank).tolist()) == sorted(rows.tolist())  # together: the global batch


def test_chunks_do_not_depend_on_how_they_are_spread():
    """(world=1, accum=2) and (world=2, accum=1) process the same chunks: the basis of equal losses."""
    one = [local_chunk(0, 2, m) for m in range(2)]
    two = [local_chunk(r, 1, 0) for r in range(2)]
    assert one == two


def test_an_epoch_never_repeats_a_sample():
    n, batch = 40, 8
    seen = torch.cat([batch_indices(n, batch, step, seed=1) for step in range(n // batch)])
    assert sorted(seen.tolist()) == list(range(n))


def test_optimizer_state_round_trips_through_names():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW([{"params": [net[0].weight, net[1].weight]},
                             {"params": [net[0].bias, net[1].bias], "weight_decay": 0.0}])
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    names = ["0.weight", "1.weight", "0.bias", "1.bias"]
    named = named_optimizer_state(opt.state_dict(), names)
    assert set(named["state"]) == set(names)
    assert torch.equal(named["state"]["1.weight"]["exp_avg"], opt.state[net[1].weight]["exp_avg"])
    back = positional_optimizer_state(named, names)
    fresh = torch.optim.AdamW([{"params": [net[0].weight, net[1].weight]},
                               {"params": [net[0].bias, net[1].bias], "weight_decay": 0.0}])
    fresh.load_state_dict(back)
    for p in net.parameters():
        assert torch.equal(fresh.state[p]["exp_avg_sq"], opt.state[p]["exp_avg_sq"])


# -- torchrun ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    """DDP, 2 ranks x grad_accum 1 == 1 process x grad_accum 2. Eso-LM with alpha_0 < 1 calls the
    network twice per loss, the hardest case for DDP's gradient hooks."""
    fam = ["family=esolm", "alpha_0=0.5", "max_steps=4"]
    ref = single(tmp_path / "one", *fam, "grad_accum=2")
    torchrun(tmp_path / "two", *fam, "grad_accum=1")
    got = metrics(tmp_path / "two")
    assert_same_curve(ref, got)
    assert {"train_loss", "val_nelbo"} <= got[-1].keys()
    runtime = json.loads((tmp_path / "two" / "runtime.json").read_text())
    assert runtime["world_size"] == 2 and runtime["parallel"] == "ddp"
    assert (tmp_path / "two" / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.slow
def test_resume_on_two_fsdp_ranks_from_a_one_process_checkpoint(tmp_path):
    """Stop a 1-process run at step 2, resume it sharded (FSDP2) on 2 ranks: equals the uninterrupted run."""
    ref = single(tmp_path / "ref", "family=mdlm", "max_steps=4", "grad_accum=2")
    single(tmp_path / "run", "family=mdlm", "max_steps=2", "grad_accum=2")
    torchrun(tmp_path / "run", "family=mdlm", "max_steps=4", "grad_accum=1", "fsdp=true", "resume=true")
    assert_same_curve(ref, metrics(tmp_path / "run"))
    runtime = json.loads((tmp_path / "run" / "runtime.json").read_text())
    assert runtime["parallel"] == "fsdp2"
    # the FSDP2 checkpoint is a full one: a single process loads and resumes from it
    import toolkit
    model = toolkit.load(str(tmp_path / "run"))
    assert model.num_params() > 0


@pytest.mark.slow
def test_a_nan_on_one_fsdp_rank_skips_the_step_on_every_rank(tmp_path):
    """on_nonfinite=skip, 2 FSDP2 ranks, a NaN loss on rank 1 only at step 2: the flags are summed
    over ranks on the device, fused AdamW skips the update on both shards (found_inf), and the
    curve equals one process skipping the same step."""
    args = ["family=mdlm", "max_steps=4", "on_nonfinite=skip"]
    script = tmp_path / "poisoned_run.py"
    script.write_text(
        "import sys\n"
        "from toolkit.resolve import resolve\n"
        "from toolkit.trainer import Trainer\n"
        "tr = Trainer(resolve(sys.argv[1:]))\n"
        "loss_fn = tr.family.loss\n"
        "def loss(*a, **k):\n"
        "    v = loss_fn(*a, **k)\n"
        "    return v * float('nan') if tr.state.step + 1 == 2 and tr.dist.rank == tr.dist.world - 1 else v\n"
        "tr.family.loss = loss\n"
        "tr.fit()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for out, launch in ((tmp_path / "one", []), (tmp_path / "two", ["-m", "torch.distributed.run", "--standalone",
                                                                      "--nproc_per_node=2"])):
        extra = ["grad_accum=2"] if not launch else ["grad_accum=1", "fsdp=true"]
        proc = subprocess.run([sys.executable, *launch, str(script), *COMMON, *args, *extra, f"out={out}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "non-finite loss at step 2: skipped (1 so far)" in proc.stderr
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert_same_curve(one, two)
    assert two[2]["train_loss"] is None and two[-1]["skipped_steps"] == 1 and two[-1]["train_loss"] > 0


# -- SLURM templates (with stand-ins for srun/scontrol/torchrun) --------------------------------
def fake_slurm_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "scontrol": 'echo node-a; echo node-b',
        "srun": 'while [ "${1#--}" != "$1" ]; do shift; done; exec "$@"',
        "torchrun": 'echo "$@" > "$ARGS_OUT"',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run_template(tmp_path, script, args, extra_env):
    env = {**os.environ, "PATH": f"{fake_slurm_bin(tmp_path)}:{os.environ['PATH']}", "TOOLKIT_ENV": "",
           "ARGS_OUT": str(tmp_path / "args"), "SLURM_SUBMIT_DIR": str(ROOT), **extra_env}
    proc = subprocess.run(["bash", str(ROOT / "training" / "launch" / script), *args], env=env,
                          capture_output=True, text=True, timeout=30)
    return proc, (tmp_path / "args").read_text().split() if (tmp_path / "args").exists() else None


def test_multinode_template_launches_torchrun_with_rendezvous(tmp_path):
    proc, args = run_template(tmp_path, "slurm_multinode.sbatch", ["family=duo", "model=170M"],
                              {"SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_NUM_NODES": "2",
                               "SLURM_JOB_ID": "77", "SLURM_GPUS_ON_NODE": "4"})
    assert proc.returncode == 0, proc.stderr
    assert args[:5] == ["--nnodes=2", "--nproc_per_node=4", "--rdzv_id=77", "--rdzv_backend=c10d",
                        "--rdzv_endpoint=node-a:29500"]
    assert args[5:] == ["-m", "training.train", "resume=true", "family=duo", "model=170M"]


def test_sweep_array_template_runs_its_line(tmp_path):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("# a comment\nfamily=mdlm out=runs/a\n\nfamily=duo model=6M out=runs/b\n")
    proc, args = run_template(tmp_path, "slurm_sweep_array.sbatch", [str(sweep), "seq_len=2048"],
                              {"SLURM_ARRAY_TASK_ID": "1", "SLURM_GPUS_ON_NODE": "8"})
    assert proc.returncode == 0, proc.stderr
    assert args == ["--standalone", "--nproc_per_node=8", "-m", "training.train", "resume=true",
                    "seq_len=2048", "family=duo", "model=6M", "out=runs/b"]
    (tmp_path / "args").unlink()
    proc, args = run_template(tmp_path, "slurm_sweep_array.sbatch", [str(sweep)], {"SLURM_ARRAY_TASK_ID": "2"})
    assert proc.returncode == 2 and args is None and "no run number 2" in proc.stderr


def test_one_gpu_for_every_rank_is_refused(monkeypatch):
    from toolkit.errors import UserError
    from toolkit.trainer import Distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="use device=cuda"):
        Distributed("cuda:1")
