"""The BPB metric exactly as trainer.md §2: LUTs, the space byte added once, float64 sums."""

from __future__ import annotations

import math

import pytest
import sentencepiece as spm
import torch

from reference_trainer import train_gpt as T
from reference_trainer.synthetic import synthetic_documents, train_tokenizer

CPU = torch.device("cpu")


class FakeSP:
    """A hand-written vocabulary: controls 0-2, unk 3, a byte piece, pieces with and without '▁'."""

    pieces = ["<pad>", "<s>", "</s>", "<unk>", "<0xE2>", "\u2581the", "é", "\u2581", "ab"]

    def __init__(self, has_space_piece: bool = True):
        self.has_space_piece = has_space_piece

    def vocab_size(self):
        return len(self.pieces)

    def is_control(self, t):
        return t in (0, 1, 2)

    def is_unknown(self, t):
        return t == 3

    def is_unused(self, t):
        return False

    def is_byte(self, t):
        return t == 4

    def id_to_piece(self, t):
        return self.pieces[t]

    def unk_id(self):
        return 3

    def piece_to_id(self, piece):
        if piece == "\u2581" and not self.has_space_piece:
            return 3
        return self.pieces.index(piece) if piece in self.pieces else 3


def test_luts_on_a_hand_written_vocabulary():
    base, lead, boundary = T.build_sentencepiece_luts(FakeSP(), 12, CPU)
    assert base.tolist() == [0, 0, 0, 0, 1, 3, 2, 0, 2, 0, 0, 0]  # '▁the' -> 3: the space is NOT in the LUT
    assert lead.tolist() == [False] * 5 + [True, False, True, False] + [False] * 3
    assert boundary.tolist() == [True] * 4 + [False] * 5 + [True] * 3  # ids beyond the vocab are boundaries


def test_bpb_on_a_hand_computed_example():
    luts = T.build_sentencepiece_luts(FakeSP(), 9, CPU)
    seq = torch.tensor([1, 5, 6, 7, 8, 4, 1, 5])
    prev, tgt = seq[:-1], seq[1:]
    # bytes: <s>->'▁the' 3 (no space after BOS), 'é' 2, '▁' 0+1, 'ab' 2, byte 1, <s> 0, <s>->'▁the' 3
    assert T.target_bytes(prev, tgt, luts).tolist() == [3, 2, 1, 2, 1, 0, 3]
    nll = torch.tensor([1.0, 0.5, 2.0, 0.25, 1.5, 0.75, 1.0])
    sums = T.BpbSums(CPU)
    sums.add(nll, prev, tgt, luts)
    val_loss, val_bpb = sums.result()
    assert val_loss == pytest.approx(1.0)
    assert val_bpb == pytest.approx(7.0 / (math.log(2) * 12))
    assert sums.sums.dtype == torch.float64


def test_tokenizer_without_a_space_piece_is_refused():
    with pytest.raises(ValueError, match="▁"):
        T.build_sentencepiece_luts(FakeSP(has_space_piece=False), 9, CPU)


@pytest.fixture(scope="module", params=["nmt_nfkc", "identity"])
def tokenizer(request):
    docs = synthetic_documents(seed=3, n_docs=150)
    return spm.SentencePieceProcessor(model_proto=train_tokenizer(docs, 400, request.param)), docs


def test_lut_bytes_equal_utf8_length_of_decoded_text(tokenizer):
    sp, docs = tokenizer
    luts = T.build_sentencepiece_luts(sp, int(sp.vocab_size()), CPU)
    total_lut = total_text = 0
    for doc in docs[:80]:
        ids = torch.tensor([sp.bos_id()] + sp.encode(doc))
        n_lut = int(T.target_bytes(ids[:-1], ids[1:], luts).sum())
        n_text = len(sp.decode(ids[1:].tolist()).encode("utf-8"))
        assert n_lut == n_text, doc
        total_lut, total_text = total_lut + n_lut, total_text + n_text
    assert total_lut > 1000


def test_space_counted_once_and_byte_pieces_count_one(tokenizer):
    sp, _ = tokenizer
    base, lead, _ = T.build_sentencepiece_luts(sp, int(sp.vocab_size()), CPU)
    n_lead = n_byte = 0
    for t in range(int(sp.vocab_size())):
        piece = sp.id_to_piece(t)
        if sp.is_byte(t):
            assert int(base[t]) == 1
            n_byte += 1
        elif piece.startswith("\u2581") and not sp.is_control(t):
            assert bool(lead[t]) and int(base[t]) == len(piece[1:].encode("utf-8"))
            n_lead += 1
    assert n_byte == 256 and n_lead > 10
