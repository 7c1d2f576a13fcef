"""Offline synthetic corpus in the challenge's exact on-disk format, for tests and the CPU demo.

Text comes from a seeded PRNG (no network, no real data) and deliberately exercises what the byte metric must
get right: capitalised and ALL-CAPS words, digits (split_digits), punctuation, multi-byte UTF-8 (accents, CJK,
an emoji), runs of spaces, tabs, newlines, a non-breaking space and an NFKC-sensitive ligature. A tiny
SentencePiece BPE model is trained in memory with the official tokenizer options, and the documents are
written as `[BOS] + ids` (no EOS) into shards with the official 256-int32 header (magic 20240520, version 1).
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
BOS_ID = 1

_LEXICON = (
    "the of and to in is was for on that with as by at from his her it an are were which be this "
    "golf parameter model token byte window chunk score train value layer weight bits budget minute "
    "river stone garden market winter summer letter number signal pattern silver orange window"
).split()
_EXOTIC = ("café", "über", "naïve", "東京", "数据", "🙂", "ﬁne", "Ωmega", "São", "—")
_PUNCT = (".", ",", ";", ":", "!", "?", "'s", "(", ")", '"')
_SEPARATORS = (" ",) * 24 + ("  ", "\n", "\n\n", "\t", "\u00a0", "   ")


def synthetic_documents(seed: int = 0, n_docs: int = 400, min_words: int = 8, max_words: int = 220) -> list[str]:
    """Deterministic documents of varied length (some much longer than a tiny TRAIN_SEQ_LEN)."""
    rng = random.Random(seed)
    docs: list[str] = []
    for _ in range(n_docs):
        n = rng.randint(min_words, max_words)
        parts: list[str] = []
        for i in range(n):
            r = rng.random()
            if r < 0.06:
                word = str(rng.randint(0, 99999))
            elif r < 0.10:
                word = rng.choice(_EXOTIC)
            else:
                word = rng.choice(_LEXICON)
                c = rng.random()
                word = word.capitalize() if c < 0.12 else (word.upper() if c < 0.15 else word)
            if rng.random() < 0.1:
                word += rng.choice(_PUNCT)
            parts.append(word)
            if i < n - 1:
                parts.append(rng.choice(_SEPARATORS))
        docs.append("".join(parts).strip())
    return docs


def train_tokenizer(docs: list[str], vocab_size: int = 400, normalization: str = "nmt_nfkc") -> bytes:
    """SentencePiece BPE with the challenge's options (byte fallback, split digits, nmt_nfkc, no dummy
    prefix, ids pad/bos/eos/unk = 0/1/2/3, soft vocab limit). Returns the serialized model."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([d.replace("\x00", " ").strip() for d in docs]),
        model_writer=out,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.999,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name=normalization,
        add_dummy_prefix=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    model = out.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model)
    if sp.piece_to_id("\u2581") == sp.unk_id():
        raise ValueError("synthetic tokenizer lacks a standalone '▁' piece")
    return model


def write_shard(path: str | Path, tokens: np.ndarray | list[int]) -> None:
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() > 65535):
        raise ValueError("token ids must fit in uint16")
    if toks.size >= 2**31:
        raise ValueError("a shard holds fewer than 2^31 tokens")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, toks.size
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2").tobytes())


def read_shard(path: str | Path) -> np.ndarray:
    """Strict reader (same checks as the trainer's): header, version, exact size."""
    path = Path(path)
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header.size != HEADER_INTS or int(header[0]) != SHARD_MAGIC or int(header[1]) != SHARD_VERSION:
        raise ValueError(f"{path}: bad shard header")
    n = int(header[2])
    if path.stat().st_size != HEADER_INTS * 4 + 2 * n:
        raise ValueError(f"{path}: size does not match the header's token count")
    return np.fromfile(path, dtype="<u2", count=n, offset=HEADER_INTS * 4)


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    data_path: Path
    tokenizer_path: Path
    vocab_size: int
    val_tokens: int
    train_tokens: int
    train_shards: int

    def env(self) -> dict[str, str]:
        """The trainer env vars that point at this dataset."""
        return {
            "DATA_PATH": str(self.data_path),
            "TOKENIZER_PATH": str(self.tokenizer_path),
            "VOCAB_SIZE": str(self.vocab_size),
        }


def export_synthetic_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_docs: int = 600,
    val_docs: int = 60,
    vocab_size: int = 400,
    shard_tokens: int = 16_384,
    normalization: str = "nmt_nfkc",
) -> SyntheticDataset:
    """Write `datasets/fineweb10B_sp<V>/fineweb_{train,val}_<06d>.bin`, `tokenizers/fineweb_<V>_bpe.model`
    and a `manifest.json` shaped like the official one. The first `val_docs` documents are the val split."""
    import sentencepiece as spm

    if not 0 < val_docs < n_docs:
        raise ValueError("need 0 < val_docs < n_docs")
    root = Path(out_dir)
    docs = synthetic_documents(seed, n_docs)
    model = train_tokenizer(docs[val_docs:], vocab_size, normalization)
    sp = spm.SentencePieceProcessor(model_proto=model)
    v = int(sp.vocab_size())  # hard_vocab_limit=False: the real size may be below the request
    data_path = root / "datasets" / f"fineweb10B_sp{v}"
    tok_path = root / "tokenizers" / f"fineweb_{v}_bpe.model"
    data_path.mkdir(parents=True, exist_ok=True)
    tok_path.parent.mkdir(parents=True, exist_ok=True)
    tok_path.write_bytes(model)

    def stream(ds: list[str]) -> np.ndarray:
        ids: list[int] = []
        for d in ds:
            ids.append(BOS_ID)
            ids.extend(sp.encode(d))
        return np.asarray(ids, dtype=np.int64)

    val = stream(docs[:val_docs])
    train = stream(docs[val_docs:])
    write_shard(data_path / "fineweb_val_000000.bin", val)
    n_shards = max(1, -(-train.size // shard_tokens))
    for i in range(n_shards):  # documents may straddle shards, as in the official export
        write_shard(data_path / f"fineweb_train_{i:06d}.bin", train[i * shard_tokens : (i + 1) * shard_tokens])
    manifest = {
        "datasets": [
            {
                "name": data_path.name,
                "tokenizer": tok_path.name,
                "synthetic_seed": seed,
                "stats": {
                    "files_train": n_shards,
                    "files_val": 1,
                    "tokens_train": int(train.size),
                    "tokens_val": int(val.size),
                    "docs_val": val_docs,
                    "docs_total": n_docs,
                },
            }
        ],
        "tokenizers": [
            {"name": tok_path.name, "kind": "sentencepiece_bpe", "vocab_size": v, "normalization": normalization}
        ],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return SyntheticDataset(root, data_path, tok_path, v, int(val.size), int(train.size), n_shards)


# A configuration that trains in seconds on one CPU core; used by the tests and `pgolf-train demo`.
TINY_TRAIN_ENV = {
    "DEVICE": "cpu",
    "COMPILE": "0",
    "NUM_LAYERS": "2",
    "MODEL_DIM": "32",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "TRAIN_SEQ_LEN": "32",
    "TRAIN_BATCH_TOKENS": "512",
    "GRAD_ACCUM_STEPS": "1",
    "ITERATIONS": "12",
    "WARMUP_STEPS": "0",
    "WARMDOWN_ITERS": "6",
    "VAL_LOSS_EVERY": "0",
    "TRAIN_LOG_EVERY": "4",
    "VAL_BATCH_SIZE": "4096",
    "MAX_WALLCLOCK_SECONDS": "0",
}


def tiny_env(dataset: SyntheticDataset, **overrides: str | int | float) -> dict[str, str]:
    """TINY_TRAIN_ENV pointed at `dataset`, with overrides (values stringified)."""
    return {**TINY_TRAIN_ENV, **dataset.env(), **{k: str(v) for k, v in overrides.items()}}
