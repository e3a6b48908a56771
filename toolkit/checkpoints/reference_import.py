"""Import the reference code's checkpoints into a toolkit checkpoint directory.

    python -m toolkit.convert SOURCE --family mdlm --out DIR [--tokenizer PATH] [--n-heads N]

SOURCE is a Lightning `.ckpt` (a `state_dict` of `backbone.`-prefixed keys), a plain state
dict (`.pt`/`.bin`/`.safetensors`), or a local Hugging Face snapshot directory of the
released models (config.json + weights + tokenizer files). The reference state-dict layout
is this toolkit's own (docs/methods.md), so the weights load as they are; the shapes give the
sizes, a config or `--n-heads` the head count. Pickles are read weights-only: a file that
holds other objects is refused, never unpickled.
"""
from __future__ import annotations

import json
import pickle
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from toolkit.checkpoints.imported_tokenizers import load_any_tokenizer
from toolkit.checkpoints.rundir import save_checkpoint
from toolkit.config import RunConfig
from toolkit.errors import UserError
from toolkit.families import REGISTRY, get_family
from toolkit.model.backbone import Backbone
from toolkit.options import parse_overrides
from toolkit.resolve import set_key, validate

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
REQUIRED = ("vocab_embed.embedding", "sigma_map.mlp.0.weight", "blocks.0.attn_qkv.weight",
            "output_layer.linear.weight")
ROTARY_KEY = "rotary_emb.inv_freq"
MASK_NAMES = ("[MASK]", "<mask>", "<|mask|>")
EOS_NAMES = ("[EOS]", "</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")
HEAD_KEYS = ("n_heads", "num_attention_heads", "num_heads", "n_head")
LENGTH_KEYS = ("model_length", "max_position_embeddings", "seq_len", "length", "max_seq_len")
EXPLICIT_FAMILY_KEYS = ("family", "algo")
CLASS_FAMILY_KEYS = ("model_type", "architectures", "parameterization")
DEFAULT_SEQ_LEN = 1024


# -- reading weights -------------------------------------------------------------------------
def _one_line(e: Exception) -> str:
    text = str(e).strip()
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return (f"it holds a non-tensor object ({unsupported.group(1)}); refusing to unpickle it "
                "(--stub-objects reads it with inert placeholders, or re-save just the state_dict)")
    first = re.split(r"(?<=[.!])\s", text.splitlines()[0])[0] if text else "unreadable"
    if isinstance(e, pickle.UnpicklingError):
        return f"not loadable weights-only, refusing to unpickle it ({first})"
    return f"truncated or corrupt ({e.__class__.__name__}: {first})"


class Inert:
    """Stands in for a class a checkpoint names (e.g. an omegaconf config): keeps its data, runs nothing."""
    args: tuple = ()
    state = None

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _inert_globals(path: Path) -> list:
    """(stand-in, name) for every non-weights global the pickle refers to."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    return [(type(n.rsplit(".", 1)[-1], (Inert,), {"__module__": "inert"}), n) for n in names]


def _plain(obj, depth: int = 0):
    """Plain dicts/lists out of stand-ins (an omegaconf node keeps its data in `_content`/`_val`)."""
    if depth > 50:
        return None
    if isinstance(obj, Inert):
        obj = obj.state if obj.state is not None else obj.args
        if isinstance(obj, dict):
            obj = obj.get("_content", obj.get("_val", obj))
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items() if isinstance(k, str)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return obj


def read_weights_file(path: Path, stub_objects: bool = False) -> tuple[dict, dict]:
    """(flat tensor dict, metadata dict) of one weights file; never runs code from the pickle.

    A pickle naming other classes is refused, or with `stub_objects` read with inert stand-ins
    in their place (a reference Lightning checkpoint stores its omegaconf config that way).
    """
    if not path.is_file():
        raise UserError(f"not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path)), {}
        except Exception as e:
            raise UserError(f"cannot read {path}: {_one_line(e)}") from None
    if path.suffix not in PICKLE_SUFFIXES:
        raise UserError(f"{path}: unknown weights format (expected .ckpt, .pt, .pth, .bin or .safetensors)")
    try:
        if stub_objects:
            with torch.serialization.safe_globals(_inert_globals(path)):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # UnpicklingError (foreign object), RuntimeError/EOFError (truncated)
        raise UserError(f"cannot read {path} weights-only: {_one_line(e)}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a state dict or a Lightning checkpoint, got {type(obj).__name__}")
    meta = {}
    if isinstance(obj.get("state_dict"), dict):   # Lightning
        meta = _plain(obj.get("hyper_parameters"))
        meta = meta if isinstance(meta, dict) else {}
        obj = obj["state_dict"]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserError(f"{path}: holds no tensors")
    return tensors, meta


def read_source(source: str, stub_objects: bool = False) -> tuple[dict, dict, Path | None]:
    """Weights, metadata and (for a directory) the directory where tokenizer files may sit."""
    p = Path(source)
    if p.is_dir():
        meta = {}
        if (p / "config.json").is_file():
            try:
                meta = json.loads((p / "config.json").read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"cannot parse {p / 'config.json'}: {e}") from None
        files = sorted(p.glob("*.safetensors")) or sorted(f for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES)
        if not files:
            raise UserError(f"{p}: no weights (*.safetensors, *.bin, *.pt, *.ckpt) in this directory")
        state: dict = {}
        for f in files:   # sharded snapshots: model-0000k-of-0000n.safetensors
            tensors, extra = read_weights_file(f, stub_objects)
            state.update(tensors)
            meta = {**extra, **meta}
        return state, meta, p
    if not p.exists():
        raise UserError(f"not found: {source}")
    state, meta = read_weights_file(p, stub_objects)
    return state, meta, None


def backbone_state(state: dict) -> tuple[dict, list[str]]:
    """Strip the prefix (`backbone.`, or none) and keep the backbone's keys; also list the others."""
    anchors = [k for k in state if k.endswith("vocab_embed.embedding")]
    if len(anchors) != 1:
        raise UserError("not a checkpoint of the reference backbone: "
                        + ("no 'vocab_embed.embedding' weight" if not anchors else f"{len(anchors)} embeddings"))
    prefix = anchors[0][: -len("vocab_embed.embedding")]
    inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in REQUIRED if k not in inner]
    if missing:
        raise UserError(f"not a checkpoint of the reference backbone: missing {', '.join(prefix + m for m in missing)}")
    return inner, sorted(k for k in state if not k.startswith(prefix))


# -- metadata --------------------------------------------------------------------------------
def find_values(meta, keys) -> list:
    """Every value stored under one of `keys`, anywhere in a nested config."""
    found = []
    if isinstance(meta, dict):
        for k, v in meta.items():
            if k in keys and not isinstance(v, dict):
                found.append(v)
            elif k in keys and isinstance(v, dict) and "name" in v:
                found.append(v["name"])
            found.extend(find_values(v, keys))
    elif isinstance(meta, list):
        for v in meta:
            found.extend(find_values(v, keys))
    return found


def family_of(text: str) -> str | None:
    """The family whose `reference_names` pattern the text matches (algo names, classes, repos);
    a family derived from another (Eso-LM from MDLM) is tried before its parent."""
    for name, fam in sorted(REGISTRY.items(), key=lambda kv: -len(kv[1].__mro__)):
        if fam.reference_names and re.search(fam.reference_names, text, re.I):
            return name
    return None


def declared_family(meta: dict, source: str) -> str | None:
    """The family the source says it is: an explicit family/algo entry of its config, else an
    SDLLM-<Family> repository name, else a model class name (these are reused across families)."""
    def from_keys(keys):
        for key in keys:
            for v in find_values(meta, (key,)):
                name = family_of(" ".join(map(str, v)) if isinstance(v, list) else str(v))
                if name:
                    return name
        return None

    repo = re.search(r"SDLLM-(\w+?)-[\d.]+B", str(Path(source).resolve()), re.I)
    return from_keys(EXPLICIT_FAMILY_KEYS) or (family_of(repo.group(1)) if repo else None) \
        or from_keys(CLASS_FAMILY_KEYS)


def _one_int(values, what: str, flag: str):
    ints = sorted({int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if len(ints) > 1:
        raise UserError(f"the config gives several {what} ({ints}): pass {flag}")
    return ints[0] if ints else None


def infer_model(inner: dict, meta: dict, n_heads: int | None, seq_len: int | None) -> dict:
    """ModelConfig fields from the weight shapes (+ n_heads and length from a config or flags)."""
    vocab, d = inner["vocab_embed.embedding"].shape
    n_layers = 1 + max(int(m.group(1)) for k in inner if (m := re.match(r"blocks\.(\d+)\.", k)))
    cond_dim = inner["sigma_map.mlp.0.weight"].shape[0]
    mlp_ratio = inner["blocks.0.mlp.0.weight"].shape[0] // d if "blocks.0.mlp.0.weight" in inner else 4
    from_rotary = d // (2 * inner[ROTARY_KEY].numel()) if ROTARY_KEY in inner else None
    heads = n_heads or _one_int(find_values(meta, HEAD_KEYS), "head counts", "--n-heads") or from_rotary
    if heads is None:
        raise UserError("the head count is not in the weights: pass --n-heads (or convert a directory with config.json)")
    if from_rotary is not None and from_rotary != heads:
        raise UserError(f"n_heads={heads} does not match the checkpoint's rotary table (head size {d // from_rotary})")
    length = seq_len or _one_int(find_values(meta, LENGTH_KEYS), "lengths", "--seq-len") or DEFAULT_SEQ_LEN
    return {"n_layers": n_layers, "d_model": d, "n_heads": heads, "cond_dim": cond_dim,
            "mlp_ratio": mlp_ratio, "vocab_size": vocab, "max_seq_len": length}


# -- tokenizer -------------------------------------------------------------------------------
def find_tokenizer(explicit: str | None, snapshot: Path | None) -> Path:
    if explicit:
        return Path(explicit)
    if snapshot is not None:
        for name in ("tokenizer.json", "tokenizer.model", "tokenizer.tiktoken"):
            if (snapshot / name).is_file():
                return snapshot / name
        found = sorted(snapshot.glob("*.tiktoken"))
        if found:
            return found[0]
    raise UserError("no tokenizer: pass --tokenizer PATH (tokenizer.json, a .tiktoken file or a SentencePiece .model)")


def pick_special(tok, given: str | None, candidates, what: str) -> str:
    if given:
        if tok.token_to_id(given) is None:
            raise UserError(f"the tokenizer has no token '{given}' ({what})")
        return given
    for name in candidates:
        if tok.token_to_id(name) is not None:
            return name
    flag = "--mask-token" if what == "mask" else "--eos-token"
    raise UserError(f"the tokenizer has none of {', '.join(candidates)} ({what} token): name it with {flag}")


# -- the conversion --------------------------------------------------------------------------
def convert(source: str, family: str, out: str, tokenizer: str | None = None, n_heads: int | None = None,
            seq_len: int | None = None, mask_token: str | None = None, eos_token: str | None = None,
            options: list[str] = (), pad_vocab: bool = False, force: bool = False, name: str | None = None,
            stub_objects: bool = False, pattern: str | None = None) -> Path:
    """Write a toolkit checkpoint directory for SOURCE; `name` (e.g. a hub id) also tells the family."""
    fam = get_family(family)
    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()) and not force:
        raise UserError(f"{out} exists and is not empty: pass --force to replace it")
    state, meta, snapshot = read_source(source, stub_objects)
    declared = declared_family(meta, name or source)
    if declared is not None and declared != family:
        raise UserError(f"{source} is a {declared} checkpoint, not {family}")
    inner, ignored = backbone_state(state)
    cfg = RunConfig(family=family, options=fam.Options(**fam.imported_options))
    for k, v in infer_model(inner, meta, n_heads, seq_len).items():
        setattr(cfg.model, k, v)
    cfg.model.preset = "imported"
    cfg.data.seq_len = cfg.model.max_seq_len
    for k, v in parse_overrides(options, "--option"):
        set_key(cfg, f"options.{k}", v)
    validate(cfg)
    tok = load_any_tokenizer(find_tokenizer(tokenizer, snapshot), pattern)
    n_tok, n_emb = tok.get_vocab_size(), cfg.model.vocab_size
    if n_emb == n_tok + 1 and mask_token is None and all(tok.token_to_id(m) is None for m in MASK_NAMES):
        tok.add_special_tokens(["[MASK]"])   # the reference appends [MASK] to a vocabulary without one
        n_tok += 1
    if n_tok != n_emb:
        if not (pad_vocab and n_tok < n_emb):
            raise UserError(f"the checkpoint has {n_emb} embedding rows but the tokenizer has {n_tok} ids: "
                            "another vocabulary" + (" (--pad-vocab fills a shorter one)" if n_tok < n_emb else ""))
        tok.add_special_tokens([f"<|unused_{i}|>" for i in range(n_emb - n_tok)])
    cfg.data.mask_token = pick_special(tok, mask_token, MASK_NAMES, "mask")
    cfg.data.eos_token = pick_special(tok, eos_token, EOS_NAMES, "eos")

    net = Backbone(cfg.model)
    if ROTARY_KEY in inner:
        expect = net.rotary_emb.inv_freq
        rtol = 1e-4 if inner[ROTARY_KEY].dtype in (torch.float32, torch.float64) else 1e-2   # bf16 tables
        if inner[ROTARY_KEY].shape != expect.shape or not torch.allclose(inner[ROTARY_KEY].float(), expect, rtol=rtol):
            raise UserError("the checkpoint's rotary table is not base-10000 rotary for this head size")
    weights = {k: v for k, v in inner.items() if k != ROTARY_KEY}
    own = net.state_dict()
    unexpected = sorted(set(weights) - set(own))
    missing = sorted(set(own) - set(weights))
    if unexpected or missing:
        raise UserError(f"{source}: weights do not fit the reference backbone "
                        f"(unexpected {unexpected[:3]}, missing {missing[:3]})")
    bad = [k for k in own if own[k].shape != weights[k].shape]
    if bad:
        raise UserError(f"{source}: {bad[0]} has shape {tuple(weights[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}")
    net.load_state_dict({k: v.float() for k, v in weights.items()})
    with tempfile.TemporaryDirectory() as tmp:
        tok_file = Path(tmp) / "tokenizer.json"
        tok.save(str(tok_file))
        cfg.data.tokenizer = str((out_path / "tokenizer.json").resolve())
        # the weights keep their source dtype (bf16 releases stay half the size of fp32)
        source_dtype = {k: v.to(weights[k].dtype) for k, v in net.state_dict().items()}
        save_checkpoint(out_path, cfg, source_dtype, str(tok_file),
                        extra={"converted_from": str(source), "ignored_keys": ignored[:20]})
    return out_path
