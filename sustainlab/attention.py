"""Chapter 2: scaled dot-product attention from scratch, a memory-efficient chunked variant, and what attention costs.

Taught in ``notebooks/02_attention.ipynb``. The functions mirror ``torch.nn.functional.scaled_dot_product_attention``
(same argument names and mask semantics) so that every result can be checked against it:

- :func:`scaled_dot_product_attention`: softmax(QKᵀ/√d + mask)·V, the textbook way (materialises the N×N scores);
- :func:`chunked_attention`: the same result, walking over key/value blocks with an *online* softmax (the idea behind
  FlashAttention), so the memory for scores grows as O(N·chunk) instead of O(N²);
- :func:`attention_flops`, :func:`attention_memory_bytes`: the cost model;
- :class:`MultiHeadAttention` (backends ``"naive"``, ``"chunked"``, ``"sdpa"``) and :class:`TinyTransformer`;
- :func:`time_attention`, :func:`peak_memory_bytes`, :func:`sdpa_kernel_used`: honest measurement on CPU and GPU.

Mask semantics (as in torch's SDPA, *not* as in ``torch.nn.MultiheadAttention``): a boolean mask is ``True`` where a
query **may** attend to a key; a floating mask is **added** to the scores. ``is_causal=True`` lets query ``i`` attend
to keys ``0..i`` (top-left aligned, as torch does when the query and key lengths differ).

Fully-masked rows: a query that may attend to no key at all gets an output of zeros and attention weights of zeros.
That is what ``torch.nn.functional.scaled_dot_product_attention`` returns on the CPU in torch ≥ 2.5 (rather than the
NaNs a plain softmax over ``-inf`` gives), and it is tested.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from numbers import Integral
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .utils import Timer, pick_device, synchronize
from .validation import check_option, check_random_state_alias, check_scalar

__all__ = [
    "scaled_dot_product_attention",
    "chunked_attention",
    "causal_mask",
    "online_softmax_update",
    "attention_flops",
    "attention_memory_bytes",
    "block_flops_per_token",
    "attention_crossover_length",
    "MultiHeadAttention",
    "TransformerBlock",
    "TinyTransformer",
    "reversal_data",
    "sequence_loss",
    "sequence_accuracy",
    "time_attention",
    "peak_memory_bytes",
    "sdpa_kernel_used",
    "BACKENDS",
]

#: Attention implementations a :class:`MultiHeadAttention` can switch between.
BACKENDS = ("naive", "chunked", "sdpa")


# ---------------------------------------------------------------------------------------------------------------------
# Validation shared by the public attention functions
# ---------------------------------------------------------------------------------------------------------------------


def _check_qkv(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., length, dim) with at least 2 dimensions, got {tuple(t.shape)}.")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}.")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            f"q, k and v must have the same dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}; convert them with .to()."
        )
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on the same device, got {q.device}, {k.device}, {v.device}.")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same head dimension (last axis), got q {tuple(q.shape)} and k {tuple(k.shape)}."
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same length (second-to-last axis), got k {tuple(k.shape)} and v {tuple(v.shape)}."
        )
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"the leading (batch, head) dimensions of q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} "
            "do not broadcast."
        ) from None


def _check_mask(attn_mask, q, k, is_causal) -> None:
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"is_causal must be True or False, got {type(is_causal).__name__}; pass a mask as attn_mask.")
    if attn_mask is None:
        return
    if is_causal:
        raise ValueError("pass either attn_mask or is_causal=True, not both (fold the causal mask into attn_mask).")
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}.")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(f"attn_mask must be boolean (True = may attend) or floating (added), got {attn_mask.dtype}.")
    if attn_mask.is_floating_point() and attn_mask.dtype != q.dtype:
        raise TypeError(f"a floating attn_mask must have the dtype of q ({q.dtype}), got {attn_mask.dtype}.")
    scores_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    try:
        out = torch.broadcast_shapes(attn_mask.shape, scores_shape)
    except RuntimeError:
        out = None
    if out != scores_shape:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the attention scores' shape "
            f"{tuple(scores_shape)} (..., n_queries, n_keys)."
        )


def _check_scale(scale):
    if scale is None:
        return None
    return check_scalar(scale, "scale", min_value=0, include_min=False)


def causal_mask(n_q: int, n_k: int | None = None, device=None) -> torch.Tensor:
    """Boolean causal mask of shape ``(n_q, n_k)``: ``True`` where query ``i`` may attend to key ``j`` (``j <= i``).

    Top-left aligned like torch's ``is_causal``: right for a whole sequence (``n_q == n_k``), not for the new queries
    of a decoder with a KV cache, which need the bottom-right version (torch's
    ``torch.nn.attention.bias.causal_lower_right``) built in ``notebooks/02_attention.ipynb``, *Exercise att-2 (build,
    1 point): the causal mask, with a cache*.

    Examples
    --------
    >>> causal_mask(3).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    n_q = check_scalar(n_q, "n_q", min_value=1, integer=True)
    n_k = n_q if n_k is None else check_scalar(n_k, "n_k", min_value=1, integer=True)
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def _as_additive(attn_mask, is_causal, n_q, n_k, dtype, device):
    """The mask as a tensor added to the scores (0 or -inf), or None."""
    if is_causal:
        attn_mask = causal_mask(n_q, n_k, device=device)
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        return torch.zeros(attn_mask.shape, dtype=dtype, device=device).masked_fill(~attn_mask, float("-inf"))
    return attn_mask


# ---------------------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------------------


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, return_weights=False):
    """Compute softmax(q·kᵀ·scale + mask)·v, the naive way that stores every score.

    Same semantics as ``torch.nn.functional.scaled_dot_product_attention`` (without dropout), written so a learner can
    read each step. Taught in ``notebooks/02_attention.ipynb``, *What does attention compute?*

    Parameters
    ----------
    q : Tensor of shape (..., n_q, d)
    k : Tensor of shape (..., n_k, d)
    v : Tensor of shape (..., n_k, d_v)
        Queries, keys and values with broadcastable leading (batch, head) dimensions and one floating dtype.
    attn_mask : Tensor, optional
        Broadcastable to (..., n_q, n_k). Boolean: ``True`` where attention is allowed. Floating: added to the scores.
    is_causal : bool, default False
        Query ``i`` attends to keys ``0..i`` only. Cannot be combined with ``attn_mask``.
    scale : float, optional
        Factor applied to the scores; default ``1/sqrt(d)``.
    return_weights : bool, default False
        Also return the attention weights of shape (..., n_q, n_k).

    Returns
    -------
    out : Tensor of shape (..., n_q, d_v)
    weights : Tensor of shape (..., n_q, n_k), only if ``return_weights``
        Rows sum to 1, except fully-masked rows, which are all zero (and give a zero output), as torch does.

    Raises
    ------
    ValueError
        Mismatched head dimensions or lengths, non-broadcastable batch dimensions or mask, ``attn_mask`` together with
        ``is_causal``, or a non-positive ``scale``.
    TypeError
        Non-tensor input, mixed dtypes, or a mask that is neither boolean nor of the inputs' dtype.

    Examples
    --------
    >>> q = k = v = torch.eye(2).reshape(1, 2, 2)
    >>> out, w = scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    >>> [[round(x, 2) for x in row] for row in w[0].tolist()]
    [[1.0, 0.0], [0.33, 0.67]]
    """
    _check_qkv(q, k, v)
    _check_mask(attn_mask, q, k, is_causal)
    scale = _check_scale(scale)
    return _naive_attention(q, k, v, attn_mask, bool(is_causal), scale, return_weights)


def _naive_attention(q, k, v, attn_mask, is_causal, scale, return_weights):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    additive = _as_additive(attn_mask, is_causal, q.shape[-2], k.shape[-2], scores.dtype, scores.device)
    if additive is not None:
        scores = scores + additive
    # A row whose scores are all -inf would give exp(-inf - -inf) = NaN; subtract 0 instead so those rows become 0.
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(scores - row_max)
    total = exp.sum(dim=-1, keepdim=True)
    weights = exp / torch.where(total > 0, total, torch.ones_like(total))
    out = weights @ v
    return (out, weights) if return_weights else out


def online_softmax_update(m, l, acc, scores_block, v_block):
    """One step of the online softmax: fold a new block of scores and values into the running state.

    The state for each query row is the running maximum ``m`` of the scores seen so far, the running sum
    ``l = Σ exp(s - m)`` and the running weighted sum ``acc = Σ exp(s - m)·v``. When a block raises the maximum, the old
    sum and accumulator are rescaled by ``exp(m_old - m_new)``; the final output is ``acc / l``. Taught in
    ``notebooks/02_attention.ipynb``, *Exercise att-5 (build, 2 points): the online-softmax update*.

    Parameters
    ----------
    m : Tensor of shape (..., n_q, 1)
        Running maximum, ``-inf`` before the first block.
    l : Tensor of shape (..., n_q, 1)
        Running sum of exponentials, 0 before the first block.
    acc : Tensor of shape (..., n_q, d_v)
        Running weighted sum of values, 0 before the first block.
    scores_block : Tensor of shape (..., n_q, chunk)
        Scaled (and masked) scores of the queries against this block of keys.
    v_block : Tensor of shape (..., chunk, d_v)

    Returns
    -------
    (m, l, acc) : the updated state.
    """
    m_new = torch.maximum(m, scores_block.amax(dim=-1, keepdim=True))
    # While a row has seen only -inf scores, m_new is -inf: use 0 as the reference so no NaN appears.
    safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    correction = torch.exp(m - safe)
    p = torch.exp(scores_block - safe)
    l = l * correction + p.sum(dim=-1, keepdim=True)
    acc = acc * correction + p @ v_block
    return m_new, l, acc


def chunked_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, *, chunk_size=512,
                      query_chunk_size=None):
    """Attention computed over blocks of ``chunk_size`` keys with an online softmax (memory O(N·chunk), not O(N²)).

    Gives the same result as :func:`scaled_dot_product_attention` up to rounding, and takes the same first six
    arguments in the same order (``chunked_attention(q, k, v, mask)`` works like torch's SDPA), but never holds more
    than ``query_chunk_size × chunk_size`` scores per (batch, head) at a time. This is the core idea of
    FlashAttention, which also fuses everything into one GPU kernel. Taught in ``notebooks/02_attention.ipynb``,
    *How can attention use less memory?*

    Parameters
    ----------
    q, k, v : Tensor
        As in :func:`scaled_dot_product_attention`.
    attn_mask : Tensor, optional
        Boolean or additive mask as in :func:`scaled_dot_product_attention`; it is sliced per block.
    is_causal : bool, default False
        Query ``i`` attends to keys ``0..i``; blocks entirely in the future of every query are skipped.
    scale : float, optional
        Default ``1/sqrt(d)``.
    chunk_size : int, default 512
        Number of keys per block, ≥ 1. Larger blocks mean fewer, bigger matrix products (faster) and more memory.
    query_chunk_size : int, optional
        Walk over the queries in blocks of this size too (as FlashAttention does), so that each block of scores is
        ``query_chunk_size × chunk_size`` and can stay in the CPU cache, and causal attention skips the key blocks
        above the diagonal. Default: on the CPU, chosen so that a block holds about ``2**17`` scores per (batch, head),
        e.g. 256 queries for 512 keys; on a GPU, all queries at once (fewer kernel launches). Pass the number of
        queries to attend with all of them at once anywhere.

    Returns
    -------
    Tensor of shape (..., n_q, d_v)

    Raises
    ------
    ValueError, TypeError
        As :func:`scaled_dot_product_attention`, plus a ``chunk_size`` or ``query_chunk_size`` that is not a positive
        integer.

    Notes
    -----
    ``chunk_size`` used to be the fourth positional argument; an integer there is still read as
    ``chunk_size`` (a tensor or ``None`` is a mask) with a ``DeprecationWarning``: write ``chunk_size=`` instead.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> q, k, v = (torch.randn(2, 16, 8, generator=g) for _ in range(3))
    >>> full = scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> torch.allclose(chunked_attention(q, k, v, is_causal=True, chunk_size=5), full, atol=1e-6)
    True
    """
    if isinstance(attn_mask, Integral) and not isinstance(attn_mask, bool):
        warnings.warn(
            "chunked_attention(q, k, v, chunk_size) is deprecated: the fourth argument is attn_mask, as in "
            "scaled_dot_product_attention; pass chunk_size=... by keyword.",
            DeprecationWarning,
            stacklevel=2,
        )
        attn_mask, chunk_size = None, attn_mask
    _check_qkv(q, k, v)
    _check_mask(attn_mask, q, k, is_causal)
    scale = _check_scale(scale)
    chunk_size = check_scalar(chunk_size, "chunk_size", min_value=1, integer=True)
    if query_chunk_size is None:
        query_chunk_size = _auto_query_chunk(chunk_size, q.shape[-2], q.device)
    else:
        query_chunk_size = check_scalar(query_chunk_size, "query_chunk_size", min_value=1, integer=True)
    return _chunked_attention(q, k, v, chunk_size, bool(is_causal), attn_mask, scale, query_chunk_size)


#: Scores per (batch, head) in one block when the query tiling is chosen automatically on the CPU: 2**17 fp32 scores
#: are 512 KiB, small enough to stay in a core's L2 cache, large enough for efficient matrix products.
_AUTO_BLOCK_SCORES = 2**17


def _auto_query_chunk(chunk_size: int, n_q: int, device) -> int:
    """Queries per block when the caller does not choose.

    On the CPU, blocks of about ``_AUTO_BLOCK_SCORES`` scores (at least 16 queries) stay in the cache, which makes the
    walk clearly faster than one block of all queries at long N (``benchmarks/bench_attention.py --query-chunk-size``
    compares). On a GPU every block is another round of kernel
    launches, so all queries go at once; memory is O(N·chunk) either way.
    """
    if torch.device(device).type != "cpu":
        return n_q
    return min(n_q, max(16, _AUTO_BLOCK_SCORES // chunk_size))


def _chunked_attention(q, k, v, chunk_size, is_causal, attn_mask, scale, query_chunk_size=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    n_q, n_k = q.shape[-2], k.shape[-2]
    query_chunk_size = n_q if query_chunk_size is None else query_chunk_size
    # Without autograd the block's scores can be overwritten in place: no extra N×chunk tensor per step.
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, attn_mask))
    q_scaled = q * scale
    outputs = []
    for q_start in range(0, n_q, query_chunk_size):
        q_stop = min(q_start + query_chunk_size, n_q)
        mask_rows = None
        if attn_mask is not None:
            mask_rows = attn_mask if attn_mask.dim() < 2 or attn_mask.shape[-2] == 1 else \
                attn_mask[..., q_start:q_stop, :]
        outputs.append(_attend_query_block(q_scaled[..., q_start:q_stop, :], k, v, chunk_size, is_causal, mask_rows,
                                           q_start, needs_grad))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-2)
    return out.to(q.dtype)


def _attend_query_block(q_scaled, k, v, chunk_size, is_causal, attn_mask, row_offset, needs_grad):
    """Online-softmax attention of one block of (already scaled) queries over all keys, in key blocks."""
    n_q, n_k = q_scaled.shape[-2], k.shape[-2]
    batch = torch.broadcast_shapes(q_scaled.shape[:-2], k.shape[:-2], v.shape[:-2])
    # Accumulate in at least fp32: a bf16 running sum over thousands of keys loses too many digits.
    acc_dtype = torch.promote_types(q_scaled.dtype, torch.float32)
    device = q_scaled.device
    m = torch.full(batch + (n_q, 1), float("-inf"), dtype=acc_dtype, device=device)
    l = torch.zeros(batch + (n_q, 1), dtype=acc_dtype, device=device)
    acc = torch.zeros(batch + (n_q, v.shape[-1]), dtype=acc_dtype, device=device)
    rows = torch.arange(row_offset, row_offset + n_q, device=device).unsqueeze(-1)
    masked = is_causal or attn_mask is not None
    for start in range(0, n_k, chunk_size):
        if is_causal and start > row_offset + n_q - 1:
            break  # every later key is in the future of every query of this block
        stop = min(start + chunk_size, n_k)
        scores = (q_scaled @ k[..., start:stop, :].transpose(-2, -1)).to(acc_dtype)
        if is_causal and stop - 1 > row_offset:
            cols = torch.arange(start, stop, device=device)
            scores = scores.masked_fill(cols > rows, float("-inf"))
        elif attn_mask is not None:
            block = attn_mask[..., start:stop] if attn_mask.shape[-1] != 1 else attn_mask
            if block.dtype == torch.bool:
                scores = scores.masked_fill(~block, float("-inf"))
            else:
                scores = scores + block.to(acc_dtype)
        v_block = v[..., start:stop, :].to(acc_dtype)
        if needs_grad:
            m, l, acc = online_softmax_update(m, l, acc, scores, v_block)
            continue
        # Same update as online_softmax_update, in place.
        m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
        safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new)) if masked else m_new
        correction = torch.exp(m - safe)
        p = scores.sub_(safe).exp_()
        l = l.mul_(correction).add_(p.sum(dim=-1, keepdim=True))
        acc = acc.mul_(correction).add_(p @ v_block)
        m = m_new
    return acc / torch.where(l > 0, l, torch.ones_like(l))


# ---------------------------------------------------------------------------------------------------------------------
# Cost model
# ---------------------------------------------------------------------------------------------------------------------


def attention_flops(batch, heads, n_q, n_k, head_dim, causal=False) -> int:
    """Floating-point operations of one attention forward pass: 4·B·H·N_q·N_k·d, halved when causal.

    Two matrix products (Q·Kᵀ and P·V), each ``2·N_q·N_k·d`` FLOPs (a multiply and an add per term); the softmax's
    O(N_q·N_k) work is left out, as in the FlashAttention papers. A causal mask skips about half of the pairs, and
    kernels that exploit it (FlashAttention, :func:`chunked_attention` partly) do half the work. Taught in
    ``notebooks/02_attention.ipynb``, *What does attention cost?*

    Examples
    --------
    >>> attention_flops(1, 1, 4, 4, 2)
    128
    >>> attention_flops(1, 1, 4, 4, 2, causal=True)
    64
    """
    dims = [check_scalar(x, name, min_value=1, integer=True)
            for x, name in ((batch, "batch"), (heads, "heads"), (n_q, "n_q"), (n_k, "n_k"), (head_dim, "head_dim"))]
    b, h, nq, nk, d = dims
    flops = 4 * b * h * nq * nk * d
    return flops // 2 if causal else flops


def attention_memory_bytes(batch, heads, n_q, n_k, dtype=torch.float32, *, chunk_size=None) -> int:
    """Bytes of one score matrix (B·H·N_q·N_k elements), or of one block of it when ``chunk_size`` is given.

    Naive attention holds at least two such matrices at once (scores, then softmax weights); chunked attention holds
    ``B·H·N_q·min(chunk_size, N_k)`` per block instead.

    Examples
    --------
    >>> attention_memory_bytes(1, 8, 4096, 4096)  # 512 MiB
    536870912
    >>> attention_memory_bytes(1, 8, 4096, 4096, chunk_size=512)
    67108864
    """
    b, h, nq, nk = (check_scalar(x, name, min_value=1, integer=True)
                    for x, name in ((batch, "batch"), (heads, "heads"), (n_q, "n_q"), (n_k, "n_k")))
    if chunk_size is not None:
        nk = min(nk, check_scalar(chunk_size, "chunk_size", min_value=1, integer=True))
    if isinstance(dtype, torch.dtype):
        itemsize = torch.empty((), dtype=dtype).element_size()
    else:
        itemsize = check_scalar(dtype, "dtype (bytes per element)", min_value=1, integer=True)
    return b * h * nq * nk * itemsize


# ---------------------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a switchable attention backend (batch first).

    Projections as in ``torch.nn.MultiheadAttention``; :meth:`load_from_torch` copies the weights of one, so the two
    can be compared. Taught in ``notebooks/02_attention.ipynb``,
    *Can a tiny Transformer learn where to look?*

    Parameters
    ----------
    embed_dim : int
    num_heads : int
        Must divide ``embed_dim``.
    backend : {"naive", "chunked", "sdpa"}, default "sdpa"
        :func:`scaled_dot_product_attention`, :func:`chunked_attention`, or torch's fused kernel.
    chunk_size : int, default 128
        Keys per block for the ``"chunked"`` backend.
    bias : bool, default True

    Notes
    -----
    ``attn_mask`` follows SDPA's convention (boolean ``True`` = may attend), the opposite of
    ``torch.nn.MultiheadAttention``'s boolean masks. With ``need_weights=True`` the forward pass uses the naive backend
    (only it materialises the weights) and returns the per-head weights of shape (batch, heads, n_q, n_k).
    """

    def __init__(self, embed_dim, num_heads, backend="sdpa", chunk_size=128, bias=True):
        super().__init__()
        embed_dim = check_scalar(embed_dim, "embed_dim", min_value=1, integer=True)
        num_heads = check_scalar(num_heads, "num_heads", min_value=1, integer=True)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        self.backend = check_option(backend, "backend", BACKENDS)
        self.chunk_size = check_scalar(chunk_size, "chunk_size", min_value=1, integer=True)
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _split(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key=None, value=None, attn_mask=None, is_causal=False, need_weights=False):
        """Attend from ``query`` (batch, n_q, embed_dim) to ``key``/``value`` (default: ``query``, self-attention).

        Returns the output (batch, n_q, embed_dim), plus the weights (batch, heads, n_q, n_k) if ``need_weights``.
        """
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"query must have shape (batch, length, {self.embed_dim}), got {tuple(query.shape)}.")
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        weights = None
        if need_weights or self.backend == "naive":
            out = scaled_dot_product_attention(q, k, v, attn_mask, is_causal, return_weights=need_weights)
            if need_weights:
                out, weights = out
        elif self.backend == "chunked":
            out = chunked_attention(q, k, v, attn_mask, is_causal, chunk_size=self.chunk_size)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        out = self.out_proj(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim))
        return (out, weights) if need_weights else out

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of a ``torch.nn.MultiheadAttention`` with the same sizes (for parity checks)."""
        if mha.embed_dim != self.embed_dim or mha.num_heads != self.num_heads:
            raise ValueError(
                f"sizes differ: this module has embed_dim={self.embed_dim}, num_heads={self.num_heads}; the torch one "
                f"embed_dim={mha.embed_dim}, num_heads={mha.num_heads}."
            )
        if mha.in_proj_weight is None:
            raise ValueError("only torch.nn.MultiheadAttention with equal query/key/value sizes is supported.")
        for proj, w in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_weight.chunk(3)):
            proj.weight.copy_(w)
        if mha.in_proj_bias is not None and self.q_proj.bias is not None:
            for proj, b in zip((self.q_proj, self.k_proj, self.v_proj), mha.in_proj_bias.chunk(3)):
                proj.bias.copy_(b)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None and self.out_proj.bias is not None:
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self


class TransformerBlock(nn.Module):
    """Pre-norm Transformer encoder block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model, num_heads, d_ff, backend="sdpa"):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, backend=backend)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x, need_weights=False):
        h = self.norm1(x)
        if need_weights:
            a, weights = self.attn(h, need_weights=True)
        else:
            a, weights = self.attn(h), None
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return (x, weights) if need_weights else x


class TinyTransformer(nn.Module):
    """A tiny encoder-only Transformer mapping a token sequence to one prediction per position.

    Token embedding + learned position embedding, ``num_layers`` pre-norm blocks, a final LayerNorm and a linear
    read-out. Trained in ``notebooks/02_attention.ipynb`` to reverse sequences.

    Parameters
    ----------
    vocab_size : int
    max_len : int
    d_model : int, default 32
    num_heads : int, default 2
    num_layers : int, default 1
    d_ff : int, default 64
    backend : {"naive", "chunked", "sdpa"}, default "sdpa"

    Examples
    --------
    >>> model = TinyTransformer(vocab_size=10, max_len=8)
    >>> model(torch.zeros(3, 8, dtype=torch.long)).shape
    torch.Size([3, 8, 10])
    """

    def __init__(self, vocab_size, max_len, d_model=32, num_heads=2, num_layers=1, d_ff=64, backend="sdpa"):
        super().__init__()
        self.vocab_size = check_scalar(vocab_size, "vocab_size", min_value=2, integer=True)
        self.max_len = check_scalar(max_len, "max_len", min_value=1, integer=True)
        num_layers = check_scalar(num_layers, "num_layers", min_value=1, integer=True)
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff, backend) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def _embed(self, tokens):
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens must have shape (batch, length ≤ {self.max_len}), got {tuple(tokens.shape)}.")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.tok(tokens) + self.pos(positions)

    def forward(self, tokens):
        """Logits of shape (batch, length, vocab_size)."""
        x = self._embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    @torch.no_grad()
    def attention_maps(self, tokens) -> list[torch.Tensor]:
        """Attention weights of every layer, each of shape (batch, heads, length, length)."""
        x = self._embed(tokens)
        maps = []
        for block in self.blocks:
            x, weights = block(x, need_weights=True)
            maps.append(weights)
        return maps


def reversal_data(n_samples, seq_len=8, vocab_size=10, *, random_state=0, seed=None):
    """Random token sequences and their reversals: the synthetic task whose right attention pattern is known.

    To output position ``i`` the model must look at input position ``seq_len - 1 - i``: the anti-diagonal.

    Parameters
    ----------
    n_samples, seq_len, vocab_size : int
    random_state : int, default 0
        Seed of the generator (a local one: the global torch RNG is left alone).
    seed : int, optional
        Deprecated alias of ``random_state``.

    Returns
    -------
    (tokens, targets) : two LongTensors of shape (n_samples, seq_len)
    """
    random_state = check_random_state_alias(random_state, seed, "reversal_data")
    n_samples = check_scalar(n_samples, "n_samples", min_value=1, integer=True)
    seq_len = check_scalar(seq_len, "seq_len", min_value=1, integer=True)
    vocab_size = check_scalar(vocab_size, "vocab_size", min_value=2, integer=True)
    random_state = check_scalar(random_state, "random_state", min_value=0, integer=True)
    g = torch.Generator().manual_seed(random_state)
    tokens = torch.randint(0, vocab_size, (n_samples, seq_len), generator=g)
    return tokens, tokens.flip(-1)


def sequence_loss(logits, targets):
    """Cross-entropy averaged over every position: logits (batch, length, vocab), targets (batch, length)."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten())


@torch.no_grad()
def sequence_accuracy(model, tokens, targets, *, batch_size=1024):
    """Fraction of positions predicted correctly and fraction of whole sequences exactly right, as two floats.

    The model is evaluated in eval mode and left in the mode it was in (training or not), as ``train`` does.
    """
    batch_size = check_scalar(batch_size, "batch_size", min_value=1, integer=True)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        correct = exact = 0
        for start in range(0, len(tokens), batch_size):
            x, y = tokens[start:start + batch_size].to(device), targets[start:start + batch_size].to(device)
            hit = model(x).argmax(-1) == y
            correct += int(hit.sum())
            exact += int(hit.all(-1).sum())
    finally:
        model.train(was_training)
    return correct / targets.numel(), exact / len(targets)


# ---------------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------------


def time_attention(fn: Callable[[], object], *, repeats=3, warmup=1, device=None, reduce="median") -> float:
    """Wall-clock seconds of ``fn()``: median (or minimum) over ``repeats`` runs after ``warmup`` runs.

    The GPU is synchronised around each run: without that a CUDA timing measures only how long it took to *queue* the
    kernels. On a shared machine ``reduce="min"`` is the steadier estimate of what the computation itself costs
    (other people's work only ever adds time).
    """
    check_option(reduce, "reduce", ("median", "min"))
    repeats = check_scalar(repeats, "repeats", min_value=1, integer=True)
    warmup = check_scalar(warmup, "warmup", min_value=0, integer=True)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with Timer(device) as t:
            fn()
        times.append(t.elapsed_s)
    times.sort()
    return times[0] if reduce == "min" else times[len(times) // 2]


def peak_memory_bytes(fn: Callable[[], object], device=None) -> int:
    """Peak bytes that torch allocates *while* ``fn()`` runs, above what was allocated before.

    On CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak. On the CPU, torch has no such counter, and
    process RSS is blurred by the allocator keeping freed pages, so the allocations and frees are read from
    ``torch.profiler`` (``profile_memory=True``): each operator's net allocation is applied at its start when positive
    and at its end when negative, and the running total's maximum is returned (a slight over-estimate at worst).
    Tensors the call returns count towards the peak.
    """
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced():  # the profiler's C++ side logs start/stop lines straight to file descriptor 2
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = fn()
    del result
    changes = []
    for event in prof.events():
        delta = event.self_cpu_memory_usage
        if delta > 0:
            changes.append((event.time_range.start, 1, delta))
        elif delta < 0:
            changes.append((event.time_range.end, 0, delta))
    changes.sort()
    current = peak = 0
    for _, _, delta in changes:
        current += delta
        peak = max(peak, current)
    return int(peak)


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (unusual embedding): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def sdpa_kernel_used(q, k, v, is_causal=False) -> str:
    """Which of torch's SDPA kernels runs for these inputs: ``"flash"``, ``"efficient"``, ``"cudnn"`` or ``"math"``.

    On CUDA, each backend is tried alone through ``torch.nn.attention.sdpa_kernel`` in torch's own order of
    preference; the first that accepts the inputs is the one ``F.scaled_dot_product_attention`` picks. On the CPU
    torch uses its fused "flash" CPU kernel for most inputs, falling back to "math".
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {SDPBackend.FLASH_ATTENTION: "flash", SDPBackend.EFFICIENT_ATTENTION: "efficient",
             SDPBackend.MATH: "math"}
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        names[SDPBackend.CUDNN_ATTENTION] = "cudnn"
    try:  # torch's own order of preference, e.g. [flash, efficient, math, cudnn]
        by_value = {int(b.value): b for b in names}
        order = [by_value[i] for i in torch._C._get_sdp_priority_order() if i in by_value]
    except (AttributeError, TypeError):
        order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    order = [(names[b], b) for b in order]
    for name, backend in order:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
            return name
        except RuntimeError:
            continue
    return "unknown"


# ----------------------------------------------------------------------------------------------------------------------
# Where the quadratic term matters: attention scores against the dense matrix products of a whole block
# ----------------------------------------------------------------------------------------------------------------------


def block_flops_per_token(d_model, n_ctx, *, d_ff=None, causal=False) -> dict[str, int]:
    """Forward FLOPs per token of one standard Transformer block, split into dense products and attention scores.

    ``"dense"`` counts the matrix products with the weights: Q, K, V and output projections (``4·d²`` weights) and the
    two feed-forward layers (``2·d·d_ff``), at 2 FLOPs per weight per token, i.e. ``24·d²`` for the usual
    ``d_ff = 4·d``. ``"attention"`` counts the two products with other tokens, Q·Kᵀ and P·V: ``4·n_ctx·d`` per token
    (the per-token share of :func:`attention_flops`, summed over heads), halved when ``causal`` (on average a token
    sees half the context). This is the split of Kaplan et al. (2020), *Scaling Laws for Neural Language Models*,
    Table 1, whose causal count is ``2·n_layer·n_ctx·d`` against ``2·N`` for the weights. Biases, normalisation,
    softmax and embeddings are left out.

    Examples
    --------
    >>> block_flops_per_token(8, 48)
    {'dense': 1536, 'attention': 1536}
    >>> block_flops_per_token(8, 48, causal=True)["attention"]
    768
    """
    d = check_scalar(d_model, "d_model", min_value=1, integer=True)
    n = check_scalar(n_ctx, "n_ctx", min_value=1, integer=True)
    ff = 4 * d if d_ff is None else check_scalar(d_ff, "d_ff", min_value=1, integer=True)
    attention = 4 * n * d
    return {"dense": 2 * (4 * d * d + 2 * d * ff), "attention": attention // 2 if causal else attention}


def attention_crossover_length(d_model, *, d_ff=None, causal=False) -> float:
    """Context length at which the attention-score FLOPs of a block equal its dense FLOPs (see
    :func:`block_flops_per_token`): ``6·d_model`` for ``d_ff = 4·d_model``, twice that when ``causal``.

    Below it the weights' matrix products dominate the compute; above it the N² term does.

    Examples
    --------
    >>> attention_crossover_length(768)
    4608.0
    >>> attention_crossover_length(768, causal=True)
    9216.0
    """
    flops = block_flops_per_token(d_model, 1, d_ff=d_ff, causal=False)
    per_token_of_context = flops["attention"] / (2 if causal else 1)
    return flops["dense"] / per_token_of_context
