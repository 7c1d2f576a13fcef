"""Model options and training-time features really act: QAT under torch.compile, EMA/SWA applied, SmearGate's
BOS mask, XSA, partial RoPE, attention backends, Muon."""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch

from reference_trainer import train_gpt as T

TINY = {"VOCAB_SIZE": "64", "NUM_LAYERS": "2", "MODEL_DIM": "32", "NUM_HEADS": "4", "NUM_KV_HEADS": "2"}


def hparams(**extra) -> T.Hyperparameters:
    with mock.patch.dict(os.environ, {**TINY, **{k: str(v) for k, v in extra.items()}}):
        return T.Hyperparameters()


def randomised(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.mark.slow  # a cold torch.compile (dynamo + aot_eager) takes 10-30 s on a shared CPU
def test_qat_switch_is_a_tensor_that_compile_does_not_fold():
    h = hparams(LATE_QAT_THRESHOLD=0.15, QUANT_BITS=6)
    model = randomised(T.GPT(h, "math"))
    calls = []
    original = T.fake_quantize_rows

    def spy(w, bits):
        calls.append(bits)
        return original(w, bits)

    T.fake_quantize_rows = spy
    try:
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        x = torch.randint(0, 64, (2, 16))
        off = compiled(x, x).item()
        assert T.set_qat(model, True) == 12  # 2 blocks x (q, k, v, proj, fc, proj)
        on = compiled(x, x).item()
        T.set_qat(model, False)
        off_again = compiled(x, x).item()
    finally:
        T.fake_quantize_rows = original
    assert calls and set(calls) == {6}  # the fake-quant is in the traced graph
    assert on != pytest.approx(off, abs=1e-6)  # flipping the buffer changes the compiled model's output
    assert off_again == pytest.approx(off, abs=1e-6)
    eager_on = T.GPT(h, "math")
    eager_on.load_state_dict(model.state_dict())
    T.set_qat(eager_on, True)
    assert eager_on(x, x).item() == pytest.approx(on, rel=1e-5)


def test_qat_gradient_is_straight_through():
    lin = T.CastedLinear(8, 4, qat_bits=5)
    T.set_qat(lin, True)
    x = torch.randn(3, 8)
    lin(x).sum().backward()
    assert torch.allclose(lin.weight.grad, x.sum(0).expand(4, 8))


def test_ema_and_swa_change_the_weights_they_are_applied_to():
    model = T.GPT(hparams())
    ema, swa = T.EMA(model, 0.5), T.SWA()
    w0 = model.blocks[0].attn.c_q.weight.detach().clone()
    snapshots = []
    for _ in range(3):
        with torch.no_grad():
            model.blocks[0].attn.c_q.weight.add_(1.0)
        ema.update(model)
        swa.add(model)
        snapshots.append(model.blocks[0].attn.c_q.weight.detach().clone())
    last = model.blocks[0].attn.c_q.weight.detach().clone()
    ema.apply_to(model)
    # decay 0.5 over three updates: 1/8 of the start, then 1/8, 1/4, 1/2 of the three snapshots
    expected_ema = w0 * 0.125 + 0.5 * (w0 + 3) + 0.25 * (w0 + 2) + 0.125 * (w0 + 1)
    assert torch.allclose(model.blocks[0].attn.c_q.weight, expected_ema, atol=1e-5)
    swa.apply_to(model)
    assert torch.allclose(model.blocks[0].attn.c_q.weight, torch.stack(snapshots).mean(0), atol=1e-5)
    assert not torch.allclose(model.blocks[0].attn.c_q.weight, last)


def test_smeargate_never_mixes_across_a_bos():
    gate = T.SmearGate(8, bos_id=1)
    with torch.no_grad():
        gate.gate.fill_(3.0)
    ids = torch.tensor([[5, 6, 1, 7, 8]])
    x = torch.randn(1, 5, 8)
    out = gate(x, ids)
    assert torch.equal(out[0, 2], x[0, 2])  # the BOS position keeps its own embedding
    assert not torch.allclose(out[0, 3], x[0, 3])  # ordinary positions blend in the previous one
    x2 = x.clone()
    x2[0, :2] += 10.0  # change the previous document entirely
    assert torch.equal(gate(x2, ids)[0, 2:], out[0, 2:])


def test_xsa_output_is_orthogonal_to_the_own_value_vector():
    y, v = torch.randn(2, 5, 4, 8), torch.randn(2, 5, 2, 8)
    out = T.exclusive_self_attention(y, v)
    vn = torch.nn.functional.normalize(v, dim=-1).repeat_interleave(2, dim=2)
    assert (out * vn).sum(-1).abs().max() < 1e-5


@pytest.mark.parametrize("extra", [{}, {"XSA_LAST_N": 2, "ROPE_DIMS": 4, "LN_SCALE": 1}])
def test_sdpa_matches_the_math_backend(extra):
    h = hparams(**extra)
    a = randomised(T.GPT(h, "math"))
    b = T.GPT(h, "sdpa")
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 64, (2, 16))
    assert torch.allclose(a(x), b(x), atol=1e-4)


def test_partial_rope_leaves_the_tail_dims_alone():
    rot = T.Rotary(4, 10000.0)
    cos, sin = rot(6, torch.device("cpu"), torch.float32)
    x = torch.randn(1, 6, 2, 8)
    out = T.apply_rotary(x, cos, sin, 4)
    assert torch.equal(out[..., 4:], x[..., 4:])
    assert torch.allclose(out[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1), atol=1e-5)


def test_model_is_causal_with_every_option_on():
    h = hparams(
        SMEAR_GATE=1,
        BIGRAM_VOCAB_SIZE=31,
        XSA_LAST_N=9,
        SKIP_GATES_ENABLED=1,
        BACKOUT_LAYER=0,
        MLP_ACT="leaky_relu2",
        ROPE_DIMS=4,
        LN_SCALE=1,
        ORTHO_INIT=1,
        TIE_EMBEDDINGS=0,
        NUM_LAYERS=3,
    )
    model = randomised(T.GPT(h, "math")).eval()
    x = torch.randint(0, 64, (1, 12))
    x2 = x.clone()
    x2[0, 7:] = (x2[0, 7:] + 5) % 64
    assert torch.allclose(model(x)[0, :7], model(x2)[0, :7], atol=1e-5)
    assert not torch.allclose(model(x)[0, 7:], model(x2)[0, 7:])


def test_label_smoothing_only_in_training():
    h = hparams(LABEL_SMOOTHING=0.1)
    model = randomised(T.GPT(h, "math"))
    x = torch.randint(0, 64, (2, 8))
    train_loss = model.train()(x, x).item()
    eval_loss = model.eval()(x, x).item()
    assert train_loss != pytest.approx(eval_loss)


def test_newton_schulz_orthogonalises_and_muon_decays():
    g = torch.randn(16, 32)
    x = T.newton_schulz5(g, 10)
    sv = torch.linalg.svdvals(x)
    assert sv.min() > 0.5 and sv.max() < 1.3  # quintic NS lands near 1, not exactly on it
    p = torch.nn.Parameter(torch.ones(8, 8))
    opt = T.Muon([p], lr=0.1, momentum=0.0, backend_steps=5, weight_decay=0.5)
    p.grad = torch.zeros(8, 8)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((8, 8), 0.95))  # decoupled decay: p *= 1 - lr * wd


def test_rope_tables_stay_fp32_where_the_baseline_computes_them_in_bf16():
    """docs/trainer.md, "RoPE precision": the CUDA body cast leaves the inv_freq buffer fp32, so positions, angles
    and tables are fp32 (cast to bf16 only at the end); the baseline's `.bfloat16()` computes all of them in bf16."""
    model = T.cast_bf16_body(T.GPT(hparams(), "sdpa"))
    rot = model.blocks[0].attn.rotary
    assert rot.inv_freq.dtype == torch.float32 and model.tok_emb.weight.dtype == torch.bfloat16
    assert model.blocks[0].attn.c_q.weight.dtype == torch.float32  # fp32 master linears
    cpu, n = torch.device("cpu"), 1024
    exact = torch.cos(torch.arange(n, dtype=torch.float64)[:, None] * rot.inv_freq.double())
    ours = rot(n, cpu, torch.bfloat16)[0].squeeze().double()
    baseline = torch.outer(torch.arange(n, dtype=torch.bfloat16), rot.inv_freq.bfloat16()).cos().double()
    assert (ours - exact).abs().max() < 4e-3  # bf16 rounding of the value only
    err = (baseline - exact).abs()
    assert err[:256].max() > 0.05 and err[512:].mean() > 0.05  # bf16 angles: positions >= 256 are not even exact
