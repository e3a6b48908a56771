"""The BPE tokenizer (Hugging Face `tokenizers`) and the one shipped for the Austen corpus.

Special tokens: [EOS] separates documents, [MASK] is the absorbing state of masked diffusion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from toolkit.errors import UserError

EOS, MASK = "[EOS]", "[MASK]"
SPECIALS = [EOS, MASK]
EMBEDDED_TOKENIZER = Path(__file__).resolve().parent.parent / "assets" / "austen-bpe-4k.json"


def train_bpe(texts: Iterable[str], vocab_size: int = 4096 + len(SPECIALS)) -> Tokenizer:
    """Byte-level BPE; `vocab_size` counts the special tokens too."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tokenizer(path: str | Path | None = None, specials=SPECIALS) -> Tokenizer:
    """A tokenizer file that must define `specials` (imported vocabularies name them differently)."""
    path = Path(path) if path else EMBEDDED_TOKENIZER
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise UserError(f"cannot read tokenizer {path}: {e}") from None
    for s in specials:
        if tok.token_to_id(s) is None:
            raise UserError(f"tokenizer {path} lacks the special token {s}")
    return tok


if __name__ == "__main__":  # python -m toolkit.data.tokenizer: rebuild the shipped tokenizer
    from toolkit.data.corpus import austen_documents

    t = train_bpe(austen_documents())
    t.save(str(EMBEDDED_TOKENIZER))
    print(f"wrote {EMBEDDED_TOKENIZER} with {t.get_vocab_size()} ids")
