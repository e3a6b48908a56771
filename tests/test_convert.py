"""Importing reference checkpoints: synthetic tiny ones with the reference key names and shapes.

The imported model's logits must equal an independent re-implementation of the reference
block math (written here from the reference equations, sharing no code with toolkit/model).
"""
from __future__ import annotations

import base64
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import toolkit
from toolkit.cli.convert import main as convert_main
from toolkit.data.tokenizer import EMBEDDED_TOKENIZER

ROOT = Path(__file__).resolve().parents[1]
V = 4098          # the embedded Austen tokenizer's size
D, H, LAYERS, COND = 32, 2, 2, 16


def reference_weights(seed: int, vocab: int = V, d: int = D, layers: int = LAYERS, cond: int = COND) -> dict:
    """Random weights under the reference names; nonzero everywhere (also the zero-initialised adaLN)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    sd = {"vocab_embed.embedding": r(vocab, d),
          "sigma_map.mlp.0.weight": r(cond, 256, scale=0.1), "sigma_map.mlp.0.bias": r(cond, scale=0.1),
          "sigma_map.mlp.2.weight": r(cond, cond, scale=0.3), "sigma_map.mlp.2.bias": r(cond, scale=0.1),
          "rotary_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, d // H, 2).float() / (d // H))}
    for i in range(layers):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(d, scale=0.1), p + "norm2.weight": 1 + r(d, scale=0.1),
                   p + "attn_qkv.weight": r(3 * d, d, scale=d ** -0.5), p + "attn_out.weight": r(d, d, scale=d ** -0.5),
                   p + "mlp.0.weight": r(4 * d, d, scale=d ** -0.5), p + "mlp.0.bias": r(4 * d, scale=0.1),
                   p + "mlp.2.weight": r(d, 4 * d, scale=(4 * d) ** -0.5), p + "mlp.2.bias": r(d, scale=0.1),
                   p + "adaLN_modulation.weight": r(6 * d, cond, scale=0.2), p + "adaLN_modulation.bias": r(6 * d, scale=0.2)})
    sd.update({"output_layer.norm_final.weight": 1 + r(d, scale=0.1),
               "output_layer.linear.weight": r(vocab, d, scale=d ** -0.5), "output_layer.linear.bias": r(vocab, scale=0.1),
               "output_layer.adaLN_modulation.weight": r(2 * d, cond, scale=0.2),
               "output_layer.adaLN_modulation.bias": r(2 * d, scale=0.2)})
    return sd


# -- the reference forward, from its equations ---------------------------------------------------
def reference_logits(sd: dict, tokens: torch.Tensor, sigma: torch.Tensor, n_heads: int, causal: bool):
    """float64 throughout; one head at a time; explicit angles per position."""
    w = {k: v.double() for k, v in sd.items()}
    b, n = tokens.shape
    d = w["vocab_embed.embedding"].shape[1]
    hd = d // n_heads

    def lin(x, name, bias=True):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias else y

    def norm(x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w[name + ".weight"]

    k = torch.arange(128, dtype=torch.float64)
    f = torch.exp(-math.log(10000.0) * k / 128)
    arg = sigma.double()[:, None] * f[None]
    feats = torch.cat([torch.cos(arg), torch.sin(arg)], -1)
    c = F.silu(lin(F.silu(lin(feats, "sigma_map.mlp.0")), "sigma_map.mlp.2"))        # [B, cond]

    j = torch.arange(hd // 2, dtype=torch.float64)
    inv = 10000.0 ** (-2 * j / hd)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]                 # [L, hd/2]
    cos, sin = torch.cos(ang).repeat(1, 2), torch.sin(ang).repeat(1, 2)

    def rot(x):                                                                       # [B, L, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    allowed = torch.ones(n, n, dtype=torch.bool)
    if causal:
        allowed = torch.tril(allowed)
    x = w["vocab_embed.embedding"][tokens]
    layers = 1 + max(int(key.split(".")[1]) for key in w if key.startswith("blocks."))
    for i in range(layers):
        p = f"blocks.{i}."
        m = lin(c, p + "adaLN_modulation")[:, None, :]
        shift1, scale1, gate1, shift2, scale2, gate2 = (m[..., s * d:(s + 1) * d] for s in range(6))
        a = norm(x, p + "norm1") * (1 + scale1) + shift1
        qkv = lin(a, p + "attn_qkv", bias=False).view(b, n, 3, n_heads, hd)
        heads = []
        for h in range(n_heads):
            q, kk, v = rot(qkv[:, :, 0, h]), rot(qkv[:, :, 1, h]), qkv[:, :, 2, h]
            scores = q @ kk.transpose(1, 2) / math.sqrt(hd)
            scores = scores.masked_fill(~allowed, float("-inf"))
            heads.append(torch.softmax(scores, -1) @ v)
        x = x + gate1 * lin(torch.cat(heads, -1), p + "attn_out", bias=False)
        hdn = norm(x, p + "norm2") * (1 + scale2) + shift2
        x = x + gate2 * lin(F.gelu(lin(hdn, p + "mlp.0"), approximate="tanh"), p + "mlp.2")
    m = lin(c, "output_layer.adaLN_modulation")[:, None, :]
    shift, scale = m[..., :d], m[..., d:]
    return lin(norm(x, "output_layer.norm_final") * (1 + scale) + shift, "output_layer.linear")


def run_convert(*args) -> Path:
    convert_main([str(a) for a in args])
    return Path(str(args[args.index("--out") + 1]))


def tokens_for(seed: int, b: int = 2, n: int = 12) -> torch.Tensor:
    return torch.randint(0, V - 2, (b, n), generator=torch.Generator().manual_seed(seed))


def check(model, sd, tokens, sigma, causal):
    got = model.net(tokens, sigma, causal=causal).double()
    want = reference_logits(sd, tokens, sigma if sigma is not None else torch.zeros(len(tokens)), H, causal)
    assert want.abs().max() > 1.0   # a real signal, not zero-initialised heads
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# -- equality with the reference ------------------------------------------------------------
def test_lightning_ckpt_mdlm_matches_reference(tmp_path):
    sd = reference_weights(0)
    ckpt = {"state_dict": {"backbone." + k: v for k, v in sd.items()}, "epoch": 3, "global_step": 100,
            "hyper_parameters": {"config": {"algo": {"name": "mdlm"}, "model": {"n_heads": H, "length": 64}}}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    out = run_convert(tmp_path / "last.ckpt", "--family", "mdlm", "--out", tmp_path / "conv",
                      "--tokenizer", EMBEDDED_TOKENIZER)
    model = toolkit.load(str(out), precision="fp32")   # equalities with an fp32 reference
    assert (model.cfg.model.n_layers, model.cfg.model.d_model, model.cfg.model.n_heads) == (LAYERS, D, H)
    assert model.cfg.model.cond_dim == COND and model.max_length == 64
    check(model, sd, tokens_for(1), None, causal=False)                # MDLM feeds sigma = 0
    # the family sees the same network: SUBS logits are the reference's with [MASK] removed
    z = tokens_for(2)
    logits = model.family.denoise(model.net, z, torch.full((2,), 0.5)).double()
    want = reference_logits(sd, z, torch.zeros(2), H, False)
    want[..., model.family.mask_id] = float("-inf")
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)


def test_plain_safetensors_duo_with_nonzero_sigma_matches_reference(tmp_path):
    sd = reference_weights(3)
    save_file({"backbone." + k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "duo.safetensors"))
    out = run_convert(tmp_path / "duo.safetensors", "--family", "duo", "--out", tmp_path / "conv",
                      "--tokenizer", EMBEDDED_TOKENIZER, "--n-heads", H, "--seq-len", 32)
    model = toolkit.load(str(out), precision="fp32")   # equalities with an fp32 reference
    tokens, sigma = tokens_for(4), torch.tensor([0.3, 2.5])
    check(model, sd, tokens, sigma, causal=False)
    t = torch.tensor([0.2, 0.9])
    probs = model.family.x_theta(model.net, tokens, t).double()
    want = reference_logits(sd, tokens, model.family.schedule.sigma(t), H, False)
    want[..., model.family.mask_id] = -1e6   # the reference's neg_infinity on the [MASK] row
    torch.testing.assert_close(probs, want.softmax(-1), rtol=1e-4, atol=1e-6)
    assert float(probs.detach()[..., model.family.mask_id].max()) == 0.0


def test_plain_pt_ar_causal_matches_reference(tmp_path):
    sd = reference_weights(5)
    torch.save(sd, tmp_path / "ar.pt")   # no prefix; n_heads from the rotary table
    out = run_convert(tmp_path / "ar.pt", "--family", "ar", "--out", tmp_path / "conv", "--tokenizer", EMBEDDED_TOKENIZER)
    model = toolkit.load(str(out), precision="fp32")   # equalities with an fp32 reference
    check(model, sd, tokens_for(6), None, causal=True)
    # the reference's AR NLL: [MASK] row at -1e6, the block's first token is context, L - 1 targets
    x = tokens_for(8)
    logits = reference_logits(sd, x[:, :-1], torch.zeros(len(x)), H, True)
    logits[..., model.family.mask_id] = -1e6
    want = -logits.log_softmax(-1).gather(-1, x[:, 1:, None]).squeeze(-1).sum(1)
    torch.testing.assert_close(model.nelbo(x).double(), want, rtol=1e-5, atol=1e-4)
    from toolkit.evaluation import dataset_nelbo
    est = dataset_nelbo(model, x)
    assert est.tokens == x.shape[0] * (x.shape[1] - 1)
    assert est.nelbo == pytest.approx(float(want.sum()) / est.tokens, rel=1e-5)


def test_bf16_weights_stay_bf16_on_disk(tmp_path):
    from safetensors.torch import load_file
    sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in reference_weights(7).items()}
    torch.save({"state_dict": {"backbone." + k: v for k, v in sd.items()}}, tmp_path / "x.ckpt")
    out = run_convert(tmp_path / "x.ckpt", "--family", "mdlm", "--out", tmp_path / "conv",
                      "--tokenizer", EMBEDDED_TOKENIZER, "--n-heads", H)
    saved = load_file(str(out / "model.safetensors"))
    assert saved["blocks.0.attn_qkv.weight"].dtype == torch.bfloat16
    assert torch.equal(saved["blocks.0.attn_qkv.weight"], sd["blocks.0.attn_qkv.weight"])


# -- a hub-style snapshot with an imported vocabulary ----------------------------------------
def tiny_tiktoken(folder: Path) -> dict[str, int]:
    """256 byte tokens (ranks 4..259) + a few merges; specials <unk> <s> </s> <mask> at 0..3 as released."""
    ranks = {bytes([b]): 4 + b for b in range(256)}
    for word in [b"th", b"he", b"the", b" t", b" the", b"an", b"and", b" and", b"in", b"ing"]:
        ranks[word] = 4 + len(ranks)
    (folder / "tokenizer.tiktoken").write_text(
        "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    specials = {"<unk>": 0, "<s>": 1, "</s>": 2, "<mask>": 3}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": {str(i): {"content": s, "special": True} for s, i in specials.items()}}))
    return {**{t.decode("latin-1"): r for t, r in ranks.items()}, "_ranks": ranks}


def reference_bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's rule on one pre-token: repeatedly merge the adjacent pair of lowest merged rank."""
    parts = [bytes([b]) for b in piece]
    while True:
        best = min(((ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1)
                    if parts[i] + parts[i + 1] in ranks), default=None)
        if best is None:
            return [ranks[p] for p in parts]
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def test_snapshot_dir_with_tiktoken_vocabulary(tmp_path):
    snap = tmp_path / "models--nvidia--SDLLM-MDLM-1.7B-Base" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    ranks = tiny_tiktoken(snap)["_ranks"]
    vocab = 4 + len(ranks)
    sd = reference_weights(8, vocab=vocab)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps({"n_heads": H, "model_length": 48}))
    out = run_convert(snap, "--family", "mdlm", "--out", tmp_path / "conv")
    model = toolkit.load(str(out), precision="fp32")   # equalities with an fp32 reference
    assert model.cfg.data.mask_token == "<mask>" and model.family.mask_id == 3
    assert model.cfg.data.eos_token == "</s>" and model.family.eos_id == 2
    text = "the band and the thing then"
    ids = model.encode(text)
    want = [i for w in [b"the", b" band", b" and", b" the", b" thing", b" then"] for i in reference_bpe(w, ranks)]
    assert ids == want
    assert model.decode(ids) == text
    assert model.tokenizer.decode([3, *ids[:2]], skip_special_tokens=True) == "the "   # <mask> is special
    # and the family check reads the repository name
    with pytest.raises(SystemExit) as e:
        run_convert(snap, "--family", "duo", "--out", tmp_path / "conv2")
    assert e.value.code == 2


# -- bad input: one line, exit 2 -------------------------------------------------------------
def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit.convert", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


class Foreign:
    pass


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    sd = reference_weights(9)
    torch.save({"state_dict": {"backbone." + k: v for k, v in sd.items()},
                "hyper_parameters": {"algo": {"name": "duo"}, "model": {"n_heads": H}}}, d / "duo.ckpt")
    raw = (d / "duo.ckpt").read_bytes()
    (d / "truncated.ckpt").write_bytes(raw[: len(raw) // 2])
    torch.save({"state_dict": {"backbone." + k: v for k, v in sd.items()}, "callback": Foreign()}, d / "foreign.ckpt")
    torch.save(reference_weights(9, vocab=100), d / "small_vocab.pt")
    with open(d / "raw.pkl.pt", "wb") as f:
        pickle.dump({"x": Foreign()}, f)
    torch.save({"encoder.weight": torch.zeros(3, 3)}, d / "other_model.pt")
    no_rotary = {k: v for k, v in sd.items() if k != "rotary_emb.inv_freq"}
    torch.save(no_rotary, d / "no_heads.pt")
    return d


@pytest.mark.parametrize("name,args,needle", [
    ("duo.ckpt", [], "is a duo checkpoint, not mdlm"),
    ("truncated.ckpt", [], "cannot read"),
    ("foreign.ckpt", [], "non-tensor object"),
    ("raw.pkl.pt", [], "cannot read"),
    ("small_vocab.pt", [], "another vocabulary"),
    ("other_model.pt", [], "not a checkpoint of the reference backbone"),
    ("no_heads.pt", [], "--n-heads"),
    ("no_heads.pt", ["--n-heads", "3"], "n_heads"),
    ("missing.ckpt", [], "not found"),
])
def test_bad_input_is_one_line_and_exit_2(bad_files, tmp_path, capsys, name, args, needle):
    with pytest.raises(SystemExit) as e:
        convert_main([str(bad_files / name), "--family", "mdlm", "--out", str(tmp_path / "o"),
                      "--tokenizer", str(EMBEDDED_TOKENIZER), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_foreign_pickle_without_running_it(bad_files, tmp_path):
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state_dict": {}, "x": Boom()}, tmp_path / "evil.ckpt")
    proc = cli(tmp_path / "evil.ckpt", "--family", "mdlm", "--out", tmp_path / "o", "--tokenizer", EMBEDDED_TOKENIZER)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not marker.exists()
    proc = cli("--family", "mdlm")   # argparse's own errors are one line too
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_sentencepiece_vocabulary_gets_the_appended_mask(tmp_path):
    """The scaling runs' vocabulary: SentencePiece BPE + [MASK] appended (32,000 + 1 at full size)."""
    spm = pytest.importorskip("sentencepiece")
    from toolkit.data.corpus import austen_documents
    (tmp_path / "corpus.txt").write_text("\n".join(austen_documents()[0].splitlines()[:2000]))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True, split_digits=True,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    sd = reference_weights(10, vocab=401)
    torch.save({"state_dict": {"backbone." + k: v for k, v in sd.items()}}, tmp_path / "m.ckpt")
    out = run_convert(tmp_path / "m.ckpt", "--family", "mdlm", "--out", tmp_path / "conv", "--n-heads", H,
                      "--tokenizer", tmp_path / "sp.model")
    model = toolkit.load(str(out), precision="fp32")   # equalities with an fp32 reference
    assert model.cfg.data.mask_token == "[MASK]" and model.family.mask_id == 400
    assert model.cfg.data.eos_token == "</s>" and model.family.eos_id == 2
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    for text in ["It is a truth universally acknowledged", "  two  spaces, 1234 digits", "café — “quoted” 日本\nnext"]:
        assert model.encode(text) == sp.encode(text)
        assert model.decode(model.encode(text)) == sp.decode(sp.encode(text))
    check(model, sd, torch.randint(0, 400, (2, 10), generator=torch.Generator().manual_seed(0)), None, causal=False)


def test_declared_family_priorities():
    from toolkit.checkpoints.reference_import import declared_family
    duo_snapshot = "/x/models--nvidia--SDLLM-Duo-1.7B-Base/snapshots/a"
    assert declared_family({"model_type": "mdlm"}, duo_snapshot) == "duo"     # class names are shared
    assert declared_family({"algo": {"name": "esolm"}, "parameterization": "subs"}, "/x/y") == "esolm"
    assert declared_family({"architectures": ["MDLM"]}, "/x/y") == "mdlm"
    assert declared_family({"model_type": "ar"}, "/x/SDLLM-AR-1.7B-Base") == "ar"
    assert declared_family({"name": "duo run"}, "/x/test_ar0/run") is None     # neither key nor repo name


class FakeNode:
    """Pickles like an omegaconf node: its data in `_content` / `_val` (the class is unknown on load)."""

    def __init__(self, content, leaf=False):
        self.__dict__.update({"_val": content} if leaf else {"_content": content, "_metadata": None})


def test_stub_objects_reads_a_lightning_checkpoint_with_a_config_object(tmp_path):
    sd = reference_weights(11)
    config = FakeNode({"model": FakeNode({"n_heads": FakeNode(H, leaf=True), "length": FakeNode(24, leaf=True)}),
                       "algo": FakeNode({"name": FakeNode("mdlm", leaf=True)})})
    torch.save({"state_dict": {"backbone." + k: v for k, v in sd.items() if k != "rotary_emb.inv_freq"},
                "hyper_parameters": config}, tmp_path / "lightning.ckpt")
    args = [tmp_path / "lightning.ckpt", "--family", "mdlm", "--tokenizer", EMBEDDED_TOKENIZER]
    with pytest.raises(SystemExit):                       # refused by default ...
        run_convert(*args, "--out", tmp_path / "a")
    out = run_convert(*args, "--out", tmp_path / "b", "--stub-objects")   # ... read with placeholders on request
    model = toolkit.load(str(out), precision="fp32")   # equalities with an fp32 reference
    assert model.cfg.model.n_heads == H and model.max_length == 24      # found inside the config object
    check(model, sd, tokens_for(3), None, causal=False)
    with pytest.raises(SystemExit):                       # the config still tells the family
        run_convert(*args[:2], "duo", *args[3:], "--out", tmp_path / "c", "--stub-objects")


def test_stub_objects_never_runs_code_from_the_pickle(tmp_path):
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    sd = reference_weights(12)
    torch.save({"state_dict": {"backbone." + k: v for k, v in sd.items()}, "x": Boom()}, tmp_path / "evil.ckpt")
    with pytest.raises(SystemExit) as e:   # placeholders are not functions: the unpickler stops there
        run_convert(tmp_path / "evil.ckpt", "--family", "mdlm", "--out", tmp_path / "o", "--stub-objects",
                    "--tokenizer", EMBEDDED_TOKENIZER)
    assert e.value.code == 2
    assert not marker.exists()


def test_families_are_recognised_by_their_reference_names():
    """Each family's `reference_names` pattern: explicit algo names first, then SDLLM-<Family>
    repositories, then class names; Eso-LM (derived from MDLM) wins over MDLM's `subs`."""
    from toolkit.checkpoints.reference_import import declared_family, family_of
    assert [family_of(t) for t in ("EsoLM", "eso_lm", "udlm", "DUO_BASE", "mdlm", "subs", "ar", "autoregressive")] == \
        ["esolm", "esolm", "duo", "duo", "mdlm", "mdlm", "ar", "ar"]
    assert family_of("esolm subs") == "esolm" and family_of("dit") is None
    assert declared_family({"algo": {"name": "esolm", "parameterization": "subs"}}, "x") == "esolm"
    assert declared_family({}, "/cache/nvidia/SDLLM-Duo-1.7B-Base") == "duo"
    assert declared_family({"parameterization": "subs"}, "ckpt") == "mdlm"
