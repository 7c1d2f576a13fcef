"""CPU stand-ins for the GPU-only modules records import, for the smoke test's sandbox only.

`write_standins(dir)` writes them as plain modules into a folder that the smoke test mounts read-only in the
sandbox; the child's bootstrap installs an import hook for them. They are never on the host's import path.

- `PREFER` — GPU attention kernels, replaced even where installed (the sandbox has no GPU):
  `flash_attn_interface` (FlashAttention 3), `flash_attn` (2, and `flash_attn.cute`, 4), computed with
  `torch.nn.functional.scaled_dot_product_attention` (grouped-query heads, causal and sliding-window masks,
  softcap, the varlen entry points over `cu_seqlens`).
- `FALLBACK` — used only where the sandbox's Python lacks the real one: `triton` (`@triton.jit` kernels can be
  defined; launching one raises `StandInUnavailable`).
- `STUBS` — CUDA-only libraries with no CPU equivalent (`mamba_ssm`, `causal_conv1d`, …): importable, every
  name in them a class that raises `StandInUnavailable` when used, so the smoke test reports an environment
  gap, not a submission bug.
"""

from __future__ import annotations

from pathlib import Path

PREFER = ("flash_attn_interface", "flash_attn")
FALLBACK = ("triton",)
STUBS = (
    "mamba_ssm",
    "causal_conv1d",
    "fla",
    "liger_kernel",
    "apex",
    "transformer_engine",
    "flashinfer",
    "xformers",
    "flash_attn_3",
)
UNAVAILABLE = "StandInUnavailable"  # the exception name the smoke test classifies as an environment gap

_COMMON = r'''
"""pgolf-verify smoke test: helpers shared by the CPU stand-ins (never on the host's import path)."""
import math


class StandInUnavailable(RuntimeError):
    """A GPU-only feature the smoke test's CPU stand-ins cannot run."""


def unavailable(name):
    msg = f"{name} is GPU-only: the smoke test's CPU stand-in cannot run it"

    class _Meta(type):
        def __getattr__(cls, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return unavailable(f"{name}.{attr}")

    def _raise(*a, **k):
        raise StandInUnavailable(msg)

    return _Meta(name.rsplit(".", 1)[-1], (), {"__init__": _raise, "__call__": _raise, "__pgolf_standin__": True})


def attend(q, k, v, causal=False, softmax_scale=None, window_size=(-1, -1), softcap=0.0):
    """(B, T, H, D) attention as FlashAttention computes it: grouped-query heads, causal aligned to the bottom
    right, a sliding window (left, right), tanh softcap."""
    import torch
    import torch.nn.functional as F

    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    hq, hk = qh.size(1), kh.size(1)
    if hk != hq:
        kh = kh.repeat_interleave(hq // hk, dim=1)
        vh = vh.repeat_interleave(hq // hk, dim=1)
    t, s = qh.size(2), kh.size(2)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    left, right = (tuple(window_size) + (-1, -1))[:2] if window_size is not None else (-1, -1)
    if not softcap and left < 0 and right < 0 and (not causal or t == s):
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=bool(causal), scale=scale)
        return out.transpose(1, 2)
    scores = (qh.float() @ kh.float().transpose(-1, -2)) * scale
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    i = torch.arange(t, device=q.device)[:, None] + (s - t)
    j = torch.arange(s, device=q.device)[None, :]
    keep = torch.ones(t, s, dtype=torch.bool, device=q.device)
    if causal:
        keep &= j <= i
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    scores = scores.masked_fill(~keep, float("-inf"))
    out = torch.softmax(scores, dim=-1).nan_to_num(0.0) @ vh.float()
    return out.to(q.dtype).transpose(1, 2)


def attend_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, **kw):
    """(total, H, D) packed sequences, one `attend` per segment of `cu_seqlens`."""
    import torch

    cq, ck = [int(x) for x in cu_seqlens_q.tolist()], [int(x) for x in cu_seqlens_k.tolist()]
    outs = []
    for n in range(len(cq) - 1):
        if cq[n + 1] == cq[n]:
            continue
        qs, ks, vs = q[cq[n]:cq[n + 1]][None], k[ck[n]:ck[n + 1]][None], v[ck[n]:ck[n + 1]][None]
        outs.append(attend(qs, ks, vs, **kw)[0])
    return torch.cat(outs, dim=0) if outs else q.new_zeros(q.shape)


def pick(kw, names):
    return {n: kw[n] for n in names if n in kw and kw[n] is not None}
'''

_FA3 = r'''
"""pgolf-verify smoke test: a CPU stand-in for FlashAttention 3 (`flash_attn_interface`), through SDPA."""
from _pgolf_standin import attend, attend_varlen, pick, unavailable

__pgolf_standin__ = True
_KW = ("causal", "softmax_scale", "window_size", "softcap")


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, *args, return_attn_probs=False, **kw):
    kw.update(softmax_scale=softmax_scale, causal=causal)
    out = attend(q, k, v, **pick(kw, _KW))
    return (out, None) if return_attn_probs else out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, *args,
                           return_attn_probs=False, **kw):
    out = attend_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, **pick(kw, _KW))
    return (out, None) if return_attn_probs else out


def flash_attn_qkvpacked_func(qkv, *args, **kw):
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], *args, **kw)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return unavailable(f"flash_attn_interface.{name}")
'''

_FA2 = r'''
"""pgolf-verify smoke test: a CPU stand-in for FlashAttention 2 (`flash_attn`), through SDPA."""
from _pgolf_standin import attend, attend_varlen, pick, unavailable

__pgolf_standin__ = True
_KW = ("causal", "softmax_scale", "window_size", "softcap")


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, *args, return_attn_probs=False, **kw):
    kw.update(softmax_scale=softmax_scale, causal=causal)
    out = attend(q, k, v, **pick(kw, _KW))
    return (out, None, None) if return_attn_probs else out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                           dropout_p=0.0, softmax_scale=None, causal=False, *args, return_attn_probs=False, **kw):
    kw.update(softmax_scale=softmax_scale, causal=causal)
    out = attend_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, **pick(kw, _KW))
    return (out, None, None) if return_attn_probs else out


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, *args, **kw):
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale, causal, **kw)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return unavailable(f"flash_attn.{name}")
'''

_FA4 = r'''
"""pgolf-verify smoke test: a CPU stand-in for FlashAttention 4 (`flash_attn.cute`), through SDPA."""
from _pgolf_standin import attend, attend_varlen, pick, unavailable

__pgolf_standin__ = True
_KW = ("causal", "softmax_scale", "window_size", "softcap")


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, *args, **kw):
    kw.update(softmax_scale=softmax_scale, causal=causal)
    return attend(q, k, v, **pick(kw, _KW)), None


def flash_attn_varlen_func(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, *args, **kw):
    return attend_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, **pick(kw, _KW)), None


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return unavailable(f"flash_attn.cute.{name}")
'''

_TRITON = r'''
"""pgolf-verify smoke test: a CPU stand-in for triton. Kernels can be defined; launching one raises."""
import functools

from _pgolf_standin import StandInUnavailable

__pgolf_standin__ = True
__version__ = "0.0.0+pgolf-standin"


class _Kernel:
    def __init__(self, fn, **kw):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __getitem__(self, grid):
        return self._launch

    def _launch(self, *a, **k):
        raise StandInUnavailable(f"triton kernel {self.fn.__name__} needs a GPU: the smoke test's stand-in cannot launch it")

    __call__ = _launch


def jit(fn=None, **kw):
    return _Kernel(fn, **kw) if fn is not None else (lambda f: _Kernel(f, **kw))


def autotune(*a, **k):
    return lambda f: f


def heuristics(*a, **k):
    return lambda f: f


class Config:
    def __init__(self, *a, **k):
        self.args, self.kwargs = a, k


def cdiv(a, b):
    return -(-a // b)


def next_power_of_2(n):
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


from . import language  # noqa: E402,F401
'''

_TRITON_LANGUAGE = r'''
"""pgolf-verify smoke test: `triton.language` names, enough to define kernels (annotations, constexpr)."""
__pgolf_standin__ = True


class _Any:
    """Any tl name: usable as an annotation, a dtype, a decorator or a call; meaningless outside a kernel."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Any(f"{self._name}.{attr}")

    def __call__(self, *a, **k):
        return a[0] if len(a) == 1 and callable(a[0]) and not k else _Any(self._name + "()")

    def __getitem__(self, item):
        return self

    def __repr__(self):
        return f"tl.{self._name}"


class constexpr:
    def __init__(self, value=None):
        self.value = value


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Any(name)
'''

_TENSOR_DESCRIPTOR = r'''
"""pgolf-verify smoke test: `triton.tools.tensor_descriptor` stand-in."""
from _pgolf_standin import StandInUnavailable

__pgolf_standin__ = True


class TensorDescriptor:
    def __init__(self, *a, **k):
        raise StandInUnavailable("TensorDescriptor needs a GPU: the smoke test's triton stand-in cannot build one")

    @classmethod
    def from_tensor(cls, *a, **k):
        return cls(*a, **k)
'''

FILES = {
    "_pgolf_standin.py": _COMMON,
    "flash_attn_interface.py": _FA3,
    "flash_attn/__init__.py": _FA2,
    "flash_attn/flash_attn_interface.py": _FA2,
    "flash_attn/cute/__init__.py": _FA4,
    "triton/__init__.py": _TRITON,
    "triton/language/__init__.py": _TRITON_LANGUAGE,
    "triton/tools/__init__.py": "__pgolf_standin__ = True\n",
    "triton/tools/tensor_descriptor.py": _TENSOR_DESCRIPTOR,
}


def write_standins(root: Path) -> Path:
    """The stand-in modules under `root` (created), plus their manifest for the bootstrap."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    for rel, text in FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text.lstrip("\n"))
    (root / "manifest.json").write_text(json.dumps({"prefer": PREFER, "fallback": FALLBACK, "stubs": STUBS}))
    return root
