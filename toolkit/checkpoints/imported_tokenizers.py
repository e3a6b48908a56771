"""Tokenizers of imported checkpoints, turned into Hugging Face `tokenizers` objects.

The released 1.7B models use a 128k tiktoken vocabulary and the scaling runs a 32k
SentencePiece one. Nothing can be downloaded at run time, so the user points at a local
file: a `tokenizer.json` (used as is), a tiktoken rank file (converted here: no package
needed, the format is `base64(token) rank` per line), or a SentencePiece `.model` (converted
when the `sentencepiece` package is installed).
"""
from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from toolkit.errors import UserError

# The split pattern of the cl100k / Llama-3 family of tiktoken vocabularies (the released
# models' tokenizer config names its own; pass `pattern=` when it differs).
DEFAULT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                   r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_alphabet() -> dict[int, str]:
    """The byte -> printable character map of byte-level BPE (what `tokenizers` ByteLevel uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_tiktoken(path: Path) -> dict[bytes, int]:
    ranks = {}
    try:
        for n, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
            if not line.strip():
                continue
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise UserError(f"{path}: not a tiktoken rank file (expected 'base64 rank' lines)") from None
    if not ranks:
        raise UserError(f"{path}: empty tiktoken file")
    return ranks


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merges equivalent to tiktoken's rule (merge the adjacent pair whose concatenation has the
    lowest rank): every split of a token into two tokens, ordered by the merged token's rank."""
    merges = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    return [(m[3], m[4]) for m in merges]


def specials_beside(path: Path) -> dict[str, int]:
    """Special tokens with their ids from a tokenizer_config.json next to the file, if any."""
    cfg = path.parent / "tokenizer_config.json"
    if not cfg.is_file():
        return {}
    try:
        decoder = json.loads(cfg.read_text()).get("added_tokens_decoder", {})
        return {v["content"]: int(k) for k, v in decoder.items()}
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        raise UserError(f"cannot read the special tokens of {cfg}") from None


def tiktoken_to_tokenizer(path: Path, specials: dict[str, int] | None = None,
                          pattern: str = DEFAULT_PATTERN) -> Tokenizer:
    """A byte-level BPE `tokenizers` object that encodes like tiktoken with these ranks."""
    ranks = read_tiktoken(path)
    specials = specials_beside(path) if specials is None else specials
    alphabet = byte_alphabet()

    def text(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    vocab = {text(b): r for b, r in ranks.items()}
    clash = [s for s, i in specials.items() if i in set(ranks.values())]
    if clash:
        raise UserError(f"{path}: special token ids collide with ranks ({clash[:3]})")
    vocab.update(specials)
    merges = [(text(a), text(b)) for a, b in bpe_merges(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(sorted(specials, key=specials.get))
    return tok


def sentencepiece_to_tokenizer(path: Path) -> Tokenizer:
    """A SentencePiece BPE model (TinyLlama/Llama style: byte fallback, '▁' for spaces)."""
    try:
        import sentencepiece as spm   # deferred: optional (the [convert] extra)
    except ImportError:
        raise UserError(f"{path} is a SentencePiece model: install the 'sentencepiece' package to convert it, "
                        "or pass a tokenizer.json") from None
    sp = spm.SentencePieceProcessor(model_file=str(path))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    as_bytes = {p.encode("utf-8"): i for i, p in enumerate(pieces)
                if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))}
    merges = [(a.decode("utf-8"), b.decode("utf-8")) for a, b in bpe_merges(as_bytes)
              if _utf8(a) and _utf8(b)]
    unk = next((p for i, p in enumerate(pieces) if sp.is_unknown(i)), None)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([p for i, p in enumerate(pieces) if sp.is_control(i) or sp.is_unknown(i)])
    return tok


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def load_any_tokenizer(path: str | Path, pattern: str | None = None) -> Tokenizer:
    """tokenizer.json as is; a tiktoken rank file (split by `pattern`) or a SentencePiece .model converted."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    head = path.read_bytes()[:256]
    if path.suffix == ".json" or head.lstrip().startswith(b"{"):
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:
            raise UserError(f"cannot read tokenizer {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    try:
        head.decode("ascii")
        is_text = True
    except UnicodeDecodeError:
        is_text = False
    if is_text and path.suffix != ".model":
        return tiktoken_to_tokenizer(path, pattern=pattern or DEFAULT_PATTERN)
    return sentencepiece_to_tokenizer(path)
