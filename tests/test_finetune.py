"""Fine-tuning on prompt/response pairs: the prompt is never noised, scored or resampled."""
import dataclasses
import json

import pytest
import torch

from toolkit.resolve import resolve
from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.sample_request import SampleRequest
from tests.test_backbone import small_net

V, MASK, BOS, L, P = 50, 49, 48, 12, 5


def option_variants(fam_cls):
    """The family's default options, and each non-default objective it has (low_var, alpha_0 < 1)."""
    names = {f.name for f in dataclasses.fields(fam_cls.Options)}
    out = [fam_cls.Options()]
    if "loss" in names:
        out.append(dataclasses.replace(fam_cls.Options(), loss="low_var"))
    if "alpha_0" in names:
        out.append(dataclasses.replace(fam_cls.Options(), alpha_0=0.5))
    if "score" in names:   # an imported checkpoint's scoring protocol
        out.append(dataclasses.replace(fam_cls.Options(), score="reference"))
    return out


CASES = [(name, opts) for name in sorted(REGISTRY) for opts in option_variants(REGISTRY[name])]


class Spy(torch.nn.Module):
    """Wraps a backbone: adds a learnable bias per output position and records every input."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []
        self.bias = torch.nn.Parameter(torch.zeros(L, V))

    def forward(self, tokens, sigma=None, *, positions=None, select=None, **kw):
        out = self.net(tokens, sigma, positions=positions, **kw)
        pos = positions if positions is not None else torch.arange(tokens.shape[1]).expand_as(tokens)
        self.calls.append((tokens.detach().clone(), pos.clone()))
        out = out + self.bias[pos]
        return out[select] if select is not None else out


def batch(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 40, (b, L), generator=g)
    mask = torch.zeros(b, L, dtype=torch.bool)
    mask[:, P:] = True
    return x0, mask


def prompt_inputs(calls) -> list[torch.Tensor]:
    """Per network call, the input id at each (row, prompt position), -1 where none was fed."""
    out = []
    for tokens, pos in calls:
        seen = torch.full((tokens.shape[0], P), -1, dtype=torch.long)
        rows = torch.arange(tokens.shape[0])[:, None].expand_as(pos)
        keep = pos < P
        seen[rows[keep], pos[keep]] = tokens[keep]
        out.append(seen)
    return out


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_prompt_is_never_noised_nor_scored(name, opts):
    fam = REGISTRY[name](opts, V, MASK, BOS)
    spy = Spy(small_net(vocab=V))
    x0, mask = batch()
    fed = []
    for seed, t in [(1, torch.linspace(0.05, 0.95, 6)), (2, torch.full((6,), 0.999))]:
        for objective in (fam.loss, lambda *a, **k: fam.nelbo(*a, **k).sum()):
            spy.calls.clear()
            spy.zero_grad()
            objective(spy, x0, t, torch.Generator().manual_seed(seed), loss_mask=mask).backward()
            grad = spy.bias.grad.abs().sum(-1)
            # the reference AR protocol's logits at position i predict token i + 1
            shift = 1 if getattr(opts, "score", None) == "reference" else 0
            assert torch.all(grad[:P - shift] == 0), f"prompt positions got gradient {grad[:P]}"
            assert torch.all(grad[P - shift: L - shift] > 0)
            fed.append(prompt_inputs(spy.calls))
    # what the network sees at prompt positions does not depend on t or the noise draws
    for run in fed[1:]:
        assert len(run) == len(fed[0]) and all(torch.equal(a, b) for a, b in zip(run, fed[0]))


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_loss_does_not_depend_on_prompt_targets_when_inputs_are_fixed(name, opts):
    """Equal losses for full masks vs. masks over the response only, once prompt CE terms vanish:
    the response-only loss is the full loss's response part, normalised by response tokens."""
    fam = REGISTRY[name](opts, V, MASK, BOS)
    net = small_net(vocab=V)
    x0, mask = batch(seed=3)
    t = torch.full((x0.shape[0],), 0.5)
    a = fam.loss(net, x0, t, torch.Generator().manual_seed(2), loss_mask=mask)
    b = fam.loss(net, x0, t, torch.Generator().manual_seed(2), loss_mask=torch.ones_like(mask))
    plain = fam.loss(net, x0, t, torch.Generator().manual_seed(2))
    assert torch.isfinite(a) and torch.allclose(b, plain, atol=1e-6)   # an all-True mask is pre-training
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_sampling_never_alters_per_sample_prompts(name):
    fam = REGISTRY[name](REGISTRY[name].Options(), V, MASK, BOS)
    net = small_net(vocab=V)
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    req = SampleRequest(num_samples=3, length=10, steps=4, prompts=prompts, seed=0)
    steps = list(fam.sample(net, req))
    for step in steps:
        assert step.tokens[:, :4].tolist() == prompts
    assert (steps[-1].tokens[:, 4:] != MASK).all()


# ---- the trainer on pairs ------------------------------------------------------------------

def write_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arith_pairs(tmp_path, n=120):
    from toolkit.data.arithmetic import Difficulty, generate
    return write_pairs(tmp_path / "pairs.jsonl", generate(n, "train", Difficulty(steps=1, max_operand=9)))


def finetune_cfg(tmp_path, data, *extra):
    return resolve(["format=pairs", f"data={data}", "seq_len=48", "batch_size=4", "max_steps=4", "eval_every=2",
                    "eval_batches=2", "log_every=2", "save_every=2", "progress=false", f"out={tmp_path / 'ft'}", *extra])


def test_pairs_layout_and_loss_mask(tmp_path):
    from toolkit.data import load_data
    data = load_data(finetune_cfg(tmp_path, arith_pairs(tmp_path)).data)
    tok, eos = data.tokenizer, data.tokenizer.token_to_id("[EOS]")
    row, mask = data.train[0], data.train_mask[0]
    p = int((~mask).sum())
    assert not mask[:p].any() and mask[p:].all()          # prompt first, then the scored part
    assert row[-1] == eos and (row[mask] == eos).any()     # responses end in [EOS] padding that is scored
    text = tok.decode(row[:p].tolist())
    assert text.endswith("\n") and text.rstrip().endswith("?")
    assert len(data.val) >= 1 and data.val_mask.shape == data.val.shape


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_finetune_from_a_run_resumes_and_logs_response_nelbo(tiny_checkpoint, tmp_path, family):
    """init= a toolkit run: the weights are the run's, the metrics/checkpoint/resume are the trainer's."""
    from toolkit import load
    from toolkit.trainer import Trainer
    base = tiny_checkpoint(family)
    data = arith_pairs(tmp_path)
    cfg = finetune_cfg(tmp_path, data, f"init={base}", "max_steps=2")
    trainer = Trainer(cfg)
    before = load(base).net.state_dict()
    assert all(torch.equal(before[k], v) for k, v in trainer.net.state_dict().items())
    trainer.fit()
    Trainer(finetune_cfg(tmp_path, data, f"init={base}", "max_steps=4", "resume=true")).fit()
    lines = [json.loads(x) for x in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 2, 4] and all("val_nelbo" in x for x in lines)
    model = load(str(tmp_path / "ft"))
    assert model.name == family and model.cfg.data.format == "pairs"


def test_lora_trains_adapters_only_and_merges(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file
    from toolkit import load
    from toolkit.trainer import Trainer
    base = tiny_checkpoint("mdlm")
    Trainer(finetune_cfg(tmp_path, arith_pairs(tmp_path), f"init={base}", "lora_rank=4", "lr=1e-2")).fit()
    state = load_file(str(tmp_path / "ft" / "checkpoint" / "model.safetensors"))
    original = load(base, precision="fp32").net.state_dict()
    frozen = {k.replace(".base_layer", ""): v for k, v in state.items() if ".lora_" not in k}
    assert frozen.keys() == original.keys()
    assert all(torch.equal(frozen[k], original[k]) for k in original)        # the base never moved
    assert any(".lora_B." in k and v.abs().sum() > 0 for k, v in state.items())
    # fp32 pinned: auto may time bf16 faster for one of the three models on a native-bf16 CPU
    merged = load(str(tmp_path / "ft" / "merged"), precision="fp32")
    on_load = load(str(tmp_path / "ft"), precision="fp32")
    assert not any(".lora_" in k for k in merged.net.state_dict())
    x = torch.randint(0, 40, (2, 16))
    assert torch.allclose(merged.net(x), on_load.net(x), atol=1e-5)
    assert not torch.allclose(merged.net(x), load(base, precision="fp32").net(x), atol=1e-4)


@pytest.mark.parametrize("rows,needle", [
    ([{"question": "a?"}], "no field 'answer'"),
    ([{"question": "a?", "answer": "  "}], "the response is empty"),
    ([{"question": "a?", "answer": "one two " * 60}], "longer than seq_len"),
    ([{"question": 3, "answer": "4"}], "is not text"),
])
def test_bad_pairs_are_one_line_errors(tmp_path, rows, needle):
    from toolkit.data import load_data
    data = write_pairs(tmp_path / "bad.jsonl", [{"question": "ok?", "answer": "#### 1"}] * 3 + rows)
    with pytest.raises(UserError, match=needle) as e:
        load_data(finetune_cfg(tmp_path, data).data)
    assert "\n" not in str(e.value) and "bad.jsonl:4" in str(e.value)


def test_vocabulary_mismatch_with_the_init_checkpoint(tiny_checkpoint, tmp_path):
    from toolkit.data.tokenizer import train_bpe
    from toolkit.trainer import Trainer
    data = arith_pairs(tmp_path)
    tok = train_bpe([line for line in data.read_text().splitlines()], vocab_size=300)
    tok.save(str(tmp_path / "tok.json"))
    cfg = finetune_cfg(tmp_path, data, f"init={tiny_checkpoint('mdlm')}", f"tokenizer={tmp_path / 'tok.json'}",
                       "seq_len=128")
    with pytest.raises(UserError, match="vocabulary of 4098 ids but the data's tokenizer has"):
        Trainer(cfg)


def test_finetune_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    bad = write_pairs(tmp_path / "bad.jsonl", [{"prompt": "x", "answer": "1"}] * 3)
    for args, needle in [([f"data={bad}", "init=mdlm"], "no field 'question'"),
                         ([f"data={bad}", "init=mdlm", "family=duo"], "is a mdlm checkpoint"),
                         ([f"data={tmp_path / 'none.jsonl'}", "init=mdlm"], "not found")]:
        r = subprocess.run([sys.executable, "-m", "training.finetune", *args, f"out={tmp_path / 'o'}"],
                           capture_output=True, text=True, cwd=root)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_hugging_face_dataset_path_on_a_local_folder(tmp_path, monkeypatch):
    """The `datasets` code path used for `data=gsm8k data_config=main`, on a folder in GSM8K's layout."""
    from toolkit.data import load_data
    from toolkit.data.arithmetic import Difficulty, generate
    from toolkit.evaluation.reasoning import load_problems
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "gsm8k-like"
    folder.mkdir()
    rows = generate(60, "train", Difficulty(steps=1, max_operand=9))
    write_pairs(folder / "train.jsonl", [{"question": r["question"], "answer": r["answer"]} for r in rows])
    write_pairs(folder / "test.jsonl", [{"question": r["question"], "answer": r["answer"]} for r in rows[:7]])
    from_hub = load_data(finetune_cfg(tmp_path, str(folder)).data)
    from_file = load_data(finetune_cfg(tmp_path, str(folder / "train.jsonl")).data)
    assert torch.equal(from_hub.train, from_file.train) and torch.equal(from_hub.val_mask, from_file.val_mask)
    problems = load_problems(str(folder), 0)                       # the test split, as for gsm8k
    assert len(problems) == 7 and problems[0].gold == str(rows[0]["result"])


def test_finetune_and_score_a_converted_reference_checkpoint(tmp_path):
    """The GPU path on CPU: a synthetic checkpoint in the reference layout, converted, fine-tuned, scored."""
    from safetensors.torch import save_file
    from tests.test_convert import H, reference_weights, run_convert
    from toolkit import load
    from toolkit.data.tokenizer import EMBEDDED_TOKENIZER
    from toolkit.evaluation.reasoning import load_problems, task_accuracy
    from toolkit.trainer import Trainer
    sd = reference_weights(3)
    save_file({"backbone." + k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "duo.safetensors"))
    conv = run_convert(tmp_path / "duo.safetensors", "--family", "duo", "--out", tmp_path / "conv",
                       "--tokenizer", EMBEDDED_TOKENIZER, "--n-heads", H, "--seq-len", 48)
    data = arith_pairs(tmp_path)
    Trainer(finetune_cfg(tmp_path, data, f"init={conv}", "max_steps=2")).fit()
    tuned = load(str(tmp_path / "ft"))
    assert tuned.cfg.model.d_model == load(str(conv)).cfg.model.d_model and tuned.name == "duo"
    res = task_accuracy(tuned, load_problems(str(data), 4), SampleRequest(length=48, steps=4, temperature=0))
    assert res["problems"] == 4 and res["nfe"] == 5    # Duo: T posterior steps + the greedy tail
