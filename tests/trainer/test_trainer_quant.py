"""Export: int8 baseline format, int6/int5 with GPTQ-lite, codecs, pruning, round trip into a fresh model."""

from __future__ import annotations

import io
import os
import zlib
from unittest import mock

import pytest
import torch

from reference_trainer import train_gpt as T


def hparams(env: dict[str, str]) -> T.Hyperparameters:
    with mock.patch.dict(os.environ, env):
        return T.Hyperparameters()


def weights(rows=96, cols=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    w[0, 0] = 0.5  # an outlier row: clip search should pay off there
    return w


def test_int8_is_the_baseline_format_and_error_is_half_a_step():
    sd = {
        "blocks.0.mlp.fc.weight": weights(),
        "blocks.0.attn_scale": torch.rand(512),
        "blocks.0.small": torch.randn(8, 8),
        "step": torch.tensor(3),
    }
    obj, stats = T.quantize_state_dict(sd, 8)
    assert obj["__quant_format__"] == "int8_clean_per_row_v1"
    assert set(obj) >= {"quantized", "scales", "dtypes", "passthrough"}
    q, s = obj["quantized"]["blocks.0.mlp.fc.weight"], obj["scales"]["blocks.0.mlp.fc.weight"]
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and s.dtype == torch.float16 and s.shape == (96,)
    assert obj["passthrough"]["blocks.0.attn_scale"].dtype == torch.float32  # control tensor stays fp32
    assert obj["passthrough"]["blocks.0.small"].dtype == torch.float16
    out = T.dequantize_state_dict(obj)
    assert out["step"].item() == 3 and out["blocks.0.small"].dtype == torch.float32
    w, deq = sd["blocks.0.mlp.fc.weight"], out["blocks.0.mlp.fc.weight"]
    clip = torch.quantile(w.abs(), T.INT8_CLIP_Q, dim=1)
    inside = w.abs() <= clip[:, None]
    step = s.float()[:, None].expand_as(w)
    assert ((w - deq).abs()[inside] <= step[inside] / 2 + 1e-6).all()
    assert stats["payload_bytes"] < stats["baseline_tensor_bytes"] / 3


@pytest.mark.parametrize("bits", [6, 5])
def test_intn_range_and_gptq_lite_never_worse_than_absmax(bits):
    w = weights()
    obj, _ = T.quantize_state_dict({"blocks.0.attn.c_q.weight": w}, bits, gptq_lite=True)
    plain, _ = T.quantize_state_dict({"blocks.0.attn.c_q.weight": w}, bits, gptq_lite=False)
    qmax = 2 ** (bits - 1) - 1
    assert obj["__quant_format__"] == f"int{bits}_per_row_v1"
    assert obj["quantized"]["blocks.0.attn.c_q.weight"].abs().max() <= qmax
    err = (T.dequantize_state_dict(obj)["blocks.0.attn.c_q.weight"] - w).square().sum(1)
    err_absmax = (T.dequantize_state_dict(plain)["blocks.0.attn.c_q.weight"] - w).square().sum(1)
    assert (err <= err_absmax + 1e-9).all()
    assert err[0] < err_absmax[0]  # the outlier row picks a tighter clip
    # Absmax rows: every value within half a quantisation step.
    s = plain["scales"]["blocks.0.attn.c_q.weight"].float()[:, None]
    assert ((T.dequantize_state_dict(plain)["blocks.0.attn.c_q.weight"] - w).abs() <= s / 2 + 1e-6).all()


def test_embedding_stays_int8_or_fp16():
    emb = weights(rows=1024, cols=128)
    obj, _ = T.quantize_state_dict({"tok_emb.weight": emb}, 6)
    assert obj["qmeta"]["tok_emb.weight"]["bits"] == 8
    kept, _ = T.quantize_state_dict({"tok_emb.weight": emb}, 6, fp16_names=("tok_emb.weight",))
    assert kept["passthrough"]["tok_emb.weight"].dtype == torch.float16
    assert torch.equal(T.dequantize_state_dict(kept)["tok_emb.weight"], emb.half().float())


@pytest.mark.parametrize("codec", ["zlib", "zstd", "lzma"])
def test_codecs_round_trip_and_are_detected_by_magic(codec):
    raw = bytes(range(256)) * 50
    blob = T.compress_blob(raw, codec)
    assert T.decompress_blob(blob) == raw
    assert len(blob) < len(raw)


def test_codec_resolution():
    assert T.resolve_codec("auto", 8) == "zlib"
    assert T.resolve_codec("auto", 6) in ("zstd", "lzma")
    with pytest.raises(ValueError):
        T.resolve_codec("brotli", 6)


def test_magnitude_pruning_zeroes_the_requested_fraction():
    h = hparams(
        {
            "VOCAB_SIZE": "64",
            "NUM_LAYERS": "1",
            "MODEL_DIM": "256",
            "NUM_HEADS": "2",
            "NUM_KV_HEADS": "2",
            "MLP_MULT": "2",
        }
    )
    model = T.GPT(h)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    zeroed = T.magnitude_prune_(model, 0.25)
    big = [p for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2 and p.numel() > 65536]
    assert big and zeroed == pytest.approx(0.25 * sum(p.numel() for p in big), rel=0.01)
    assert all((p == 0).float().mean() == pytest.approx(0.25, abs=0.01) for p in big)


def test_artifact_round_trip_into_a_fresh_model(tmp_path):
    h = hparams(
        {
            "VOCAB_SIZE": "64",
            "NUM_LAYERS": "2",
            "MODEL_DIM": "256",
            "NUM_HEADS": "2",
            "NUM_KV_HEADS": "1",
            "QUANT_BITS": "6",
        }
    )
    torch.manual_seed(0)
    model = T.GPT(h)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    path = str(tmp_path / "final_model.int6.ptz")
    nbytes, _, raw_len = T.serialize_artifact(model.state_dict(), h, path)
    assert nbytes == (tmp_path / "final_model.int6.ptz").stat().st_size and nbytes < raw_len
    fresh = T.GPT(h)
    fresh.load_state_dict(T.load_artifact(path), strict=True)
    x = torch.randint(0, 64, (2, 16))
    assert (fresh(x, x) - model(x, x)).abs() < 0.05  # close, but quantised
    assert not torch.equal(fresh.blocks[0].mlp.fc.weight, model.blocks[0].mlp.fc.weight)


def test_int8_container_matches_baseline_zlib_layout(tmp_path):
    h = hparams({"VOCAB_SIZE": "64", "NUM_LAYERS": "1", "MODEL_DIM": "256", "NUM_HEADS": "2", "NUM_KV_HEADS": "2"})
    model = T.GPT(h)
    path = tmp_path / "final_model.int8.ptz"
    T.serialize_artifact(model.state_dict(), h, str(path))
    obj = torch.load(io.BytesIO(zlib.decompress(path.read_bytes())), map_location="cpu")
    assert obj["__quant_format__"] == "int8_clean_per_row_v1"
