"""Plain eval, sliding window and score-first TTT: each target scored once, ranks tile the work, and TTT
never lets a token influence the weights before it is scored."""

from __future__ import annotations

import contextlib
import math
import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_trainer import train_gpt as T

CPU = torch.device("cpu")
VOCAB = 48
TINY = {
    "VOCAB_SIZE": str(VOCAB),
    "NUM_LAYERS": "2",
    "MODEL_DIM": "32",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "TRAIN_SEQ_LEN": "32",
    "VAL_BATCH_SIZE": "256",
    "EVAL_BATCH_SEQS": "8",
}


def autocast():
    return contextlib.nullcontext()


def hparams(**extra) -> T.Hyperparameters:
    with mock.patch.dict(os.environ, {**TINY, **{k: str(v) for k, v in extra.items()}}):
        return T.Hyperparameters()


def random_model(h: T.Hyperparameters, seed: int = 0) -> T.GPT:
    torch.manual_seed(seed)
    model = T.GPT(h, "math")
    with torch.no_grad():  # zero-init projections would make context irrelevant; randomise everything
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def simple_luts(vocab: int = VOCAB):
    boundary = torch.zeros(vocab, dtype=torch.bool)
    boundary[1] = True
    return (torch.arange(vocab, dtype=torch.int16) % 3 + 1, torch.arange(vocab) % 2 == 0, boundary)


def val_stream(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n,), generator=g).to(torch.uint16)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 400), seq_len=st.integers(1, 48), data=st.data())
def test_sliding_windows_score_every_target_exactly_once(total, seq_len, data):
    stride = data.draw(st.integers(1, seq_len))
    windows = T.sliding_windows(total, seq_len, stride)
    scored = [ws + i for ws, wlen, first in windows for i in range(first, wlen)]
    assert scored == list(range(total))
    for k, (ws, wlen, first) in enumerate(windows):
        assert 0 < wlen <= seq_len and ws + wlen <= total
        assert first == (0 if k == 0 else seq_len - stride)  # later windows see >= seq_len - stride context


def test_sliding_rejects_bad_stride():
    with pytest.raises(ValueError):
        T.sliding_windows(100, 32, 0)
    with pytest.raises(ValueError):
        T.sliding_windows(100, 32, 33)


def test_sliding_at_stride_seq_len_equals_plain_eval():
    h = hparams()
    model, val, luts = random_model(h), val_stream(32 * 9 + 1), simple_luts()
    plain = T.eval_val(h, model, 0, 1, CPU, 1, val, luts, autocast)
    sliding = T.eval_sliding(h, model, 0, 1, CPU, val, luts, autocast, 32)
    assert sliding == pytest.approx(plain, rel=1e-9, abs=1e-12)
    overlapped = T.eval_sliding(h, model, 0, 1, CPU, val, luts, autocast, 8)
    assert overlapped[0] != pytest.approx(plain[0], rel=1e-6)  # more context really changes the score


@pytest.mark.parametrize("which", ["plain", "sliding"])
def test_ranks_tile_the_validation_set(monkeypatch, which):
    h = hparams()
    model, val, luts = random_model(h), val_stream(32 * 7 + 1), simple_luts()
    captured: list[torch.Tensor] = []
    monkeypatch.setattr(T.BpbSums, "all_reduce", lambda self: captured.append(self.sums.clone()) or self)

    def run(rank, world):
        if which == "plain":
            return T.eval_val(h, model, rank, world, CPU, 1, val, luts, autocast)
        return T.eval_sliding(h, model, rank, world, CPU, val, luts, autocast, 8)

    run(0, 1)
    single = captured.pop()
    for r in range(3):
        run(r, 3)
    assert int(single[1]) == val.numel() - 1
    assert torch.allclose(torch.stack(captured).sum(0), single, rtol=1e-12)


@pytest.mark.parametrize("stride,perturb_from", [(32, 2 * 128 + 1), (16, 2 * 128 + 16)])
def test_ttt_is_score_first(stride, perturb_from):
    """Perturbing tokens from chunk 2 on leaves the scores of chunks 0 and 1 bit-identical."""
    h = hparams(EVAL_STRIDE=stride, TTT_CHUNK_TOKENS=128, TTT_LR=0.05, TTT_EPOCHS=2, TTT_BATCH_SEQS=2, TTT_MOMENTUM=0.0)
    val, luts = val_stream(32 * 20 + 1), simple_luts()
    _, _, base = T.eval_ttt(h, random_model(h), 0, 1, CPU, val, luts, autocast, log0=lambda m: None)
    perturbed = val.clone()
    perturbed[perturb_from:] = (perturbed[perturb_from:].to(torch.int64) + 7).remainder(VOCAB).to(torch.uint16)
    _, _, pert = T.eval_ttt(h, random_model(h), 0, 1, CPU, perturbed, luts, autocast, log0=lambda m: None)
    assert len(base) == 5
    assert base[0] == pert[0] and base[1] == pert[1]
    assert base[2] != pert[2]
    # ...and TTT really adapted the weights: later chunks score differently from plain sliding.
    frozen = hparams(
        EVAL_STRIDE=stride, TTT_CHUNK_TOKENS=128, TTT_LR=0.0, TTT_EPOCHS=2, TTT_BATCH_SEQS=2, TTT_MOMENTUM=0.0
    )
    _, _, still = T.eval_ttt(frozen, random_model(h), 0, 1, CPU, val, luts, autocast, log0=lambda m: None)
    assert still[0] == base[0] and still[3] != base[3]


def test_ttt_without_updates_equals_sliding_and_skips_the_last_chunk():
    h = hparams(EVAL_STRIDE=16, TTT_CHUNK_TOKENS=96, TTT_LR=0.0, TTT_EPOCHS=3, TTT_BATCH_SEQS=2)
    val, luts = val_stream(32 * 12 + 1), simple_luts()
    model = random_model(h)
    train_calls = []
    model.register_forward_pre_hook(lambda m, args: train_calls.append(args[0].shape[0]) if m.training else None)
    loss, bpb, chunks = T.eval_ttt(h, model, 0, 1, CPU, val, luts, autocast, log0=lambda m: None)
    assert (loss, bpb) == pytest.approx(
        T.eval_sliding(h, random_model(h), 0, 1, CPU, val, luts, autocast, 16), rel=1e-9
    )
    assert sum(c[1] for c in chunks) == val.numel() - 1
    n_chunks = math.ceil((val.numel() - 1) / 96)
    expected = sum(
        3 * math.ceil(len(range(c * 96, min((c + 1) * 96, 384) - 32 + 1, 32)) / 2) for c in range(n_chunks - 1)
    )
    assert len(train_calls) == expected  # no training step on the final chunk
