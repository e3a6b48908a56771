"""Data: the embedded corpus, local files and dataset folders, packing and the split."""
import json

import torch

from toolkit.config import DataConfig
from toolkit.data import batch_indices, load_data, load_tokenizer
from toolkit.data.corpus import austen_documents


def test_embedded_corpus_has_six_novels_and_tokenizer_roundtrips():
    docs = austen_documents()
    assert len(docs) == 6 and docs[0].startswith("PRIDE AND PREJUDICE")
    tok = load_tokenizer()
    assert 4096 <= tok.get_vocab_size() <= 4200
    assert tok.token_to_id("[MASK]") is not None and tok.token_to_id("[EOS]") is not None
    text = docs[2][1000:1500]
    assert tok.decode(tok.encode(text).ids) == text


def test_split_is_deterministic_disjoint_and_covers_the_corpus():
    a, b = load_data(DataConfig(seq_len=128)), load_data(DataConfig(seq_len=128))
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    n = len(a.train) + len(a.val)
    assert n == a.n_tokens // 128
    assert 0.01 < len(a.val) / n < 0.05
    train_rows = {tuple(r.tolist()) for r in a.train[:2000]}
    assert not any(tuple(r.tolist()) in train_rows for r in a.val)


def test_batches_walk_through_epochs_without_repeats():
    n, bs = 37, 8
    seen = torch.cat([batch_indices(n, bs, step, seed=3) for step in range(37)])  # 8 epochs exactly
    for epoch in range(8):
        assert sorted(seen[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))
    assert torch.equal(batch_indices(n, bs, 5, 3), batch_indices(n, bs, 5, 3))


def test_local_text_file_and_dataset_folder(tmp_path):
    text = "It was a dark and stormy night. " * 400
    f = tmp_path / "story.txt"
    f.write_text(text)
    d = load_data(DataConfig(data=str(f), seq_len=32))
    assert len(d.train) > 0 and len(d.val) > 0
    folder = tmp_path / "ds"
    folder.mkdir()
    with open(folder / "train.jsonl", "w") as fh:
        for i in range(50):
            fh.write(json.dumps({"text": f"Document {i}: " + text[: 200 + i]}) + "\n")
    d2 = load_data(DataConfig(data=str(folder), seq_len=32))
    assert len(d2.train) > 10
