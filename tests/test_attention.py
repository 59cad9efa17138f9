"""Tests for sustainlab.attention: parity with torch's SDPA and MultiheadAttention, the cost model, bad input."""

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sustainlab.attention import (
    MultiHeadAttention,
    TinyTransformer,
    attention_flops,
    attention_memory_bytes,
    causal_mask,
    chunked_attention,
    online_softmax_update,
    peak_memory_bytes,
    reversal_data,
    scaled_dot_product_attention,
    sdpa_kernel_used,
    sequence_accuracy,
    sequence_loss,
    time_attention,
)
from sustainlab import attention as att

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (q shape, k/v leading shape and length): batch dims, different query/key lengths, broadcast heads.
SHAPES = [
    ((5, 8), (5,)),  # no batch dims
    ((2, 3, 7, 16), (2, 3, 7)),
    ((2, 3, 4, 16), (2, 3, 9)),  # n_q < n_k
    ((1, 2, 9, 8), (1, 2, 4)),  # n_q > n_k
    ((2, 4, 6, 8), (2, 1, 6)),  # k, v broadcast over heads
    ((3, 2, 2, 5, 4), (3, 2, 2, 5)),  # three leading dims
]


def _qkv(q_shape, kv_lead, dtype=torch.float32, seed=0, d_v=None):
    g = torch.Generator().manual_seed(seed)
    d = q_shape[-1]
    q = torch.randn(q_shape, generator=g, dtype=dtype)
    k = torch.randn(kv_lead + (d,), generator=g, dtype=dtype)
    v = torch.randn(kv_lead + (d_v or d + 3,), generator=g, dtype=dtype)
    return q, k, v


def _masks(q, k):
    """Named masks for (q, k): none, boolean full/broadcast, additive, causal."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    g = torch.Generator().manual_seed(1)
    bool_full = torch.rand(n_q, n_k, generator=g) > 0.3
    bool_full[:, 0] = True  # keep at least one key per row so no row is fully masked here
    bool_row = torch.rand(1, n_k, generator=g) > 0.5  # one key-padding row broadcast over every query
    bool_row[0, 0] = True
    additive = torch.randn(n_q, n_k, generator=g)
    return {
        "none": dict(),
        "bool": dict(attn_mask=bool_full),
        "bool-broadcast-row": dict(attn_mask=bool_row),
        "additive": dict(attn_mask=additive),
        "causal": dict(is_causal=True),
        "scale": dict(scale=0.3),
    }


MASK_NAMES = ["none", "bool", "bool-broadcast-row", "additive", "causal", "scale"]


@pytest.mark.parametrize("mask_name", MASK_NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[0])) + "-nk" + str(s[1][-1]))
def test_naive_and_chunked_match_torch_sdpa(shape, mask_name):
    """Do both implementations give torch's SDPA result within 1e-5 for every shape and mask kind?"""
    q, k, v = _qkv(*shape)
    kwargs = _masks(q, k)[mask_name]
    expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
    ours = scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    for chunk, query_chunk in ((1, None), (3, None), (64, None), (3, 2), (2, 5)):
        chunked = chunked_attention(q, k, v, **kwargs, chunk_size=chunk, query_chunk_size=query_chunk)
        torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=1e-5)
    # Positionally too, in SDPA's order (attn_mask, is_causal, scale), with the default tiling.
    positional = (kwargs.get("attn_mask"), kwargs.get("is_causal", False), kwargs.get("scale"))
    torch.testing.assert_close(chunked_attention(q, k, v, *positional), expected, atol=1e-5, rtol=1e-5)


def test_weights_are_a_distribution_and_give_the_output():
    """Do the returned weights sum to one per row, respect the causal mask, and reproduce the output?"""
    q, k, v = _qkv((2, 6, 8), (2, 6))
    out, w = scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 6))
    assert (w[..., ~causal_mask(6)] == 0).all()
    torch.testing.assert_close(w @ v, out)


def test_fully_masked_rows_give_zeros_like_torch():
    """Does a query that may attend to nothing get zeros (weights and output), as torch's CPU SDPA returns?"""
    q, k, v = _qkv((1, 2, 5, 8), (1, 2, 6))
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[2] = False
    additive = torch.zeros(5, 6).masked_fill(~mask, float("-inf"))
    for m in (mask, additive):
        out, w = scaled_dot_product_attention(q, k, v, attn_mask=m, return_weights=True)
        assert torch.isfinite(out).all()
        assert (out[..., 2, :] == 0).all() and (w[..., 2, :] == 0).all()
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m), atol=1e-5, rtol=1e-5)
        chunked = chunked_attention(q, k, v, m, chunk_size=2, query_chunk_size=2)
        assert torch.isfinite(chunked).all() and (chunked[..., 2, :] == 0).all()
        torch.testing.assert_close(chunked, out, atol=1e-5, rtol=1e-5)


def test_gradients_match_torch():
    """Do gradients through our attention and chunked attention equal those through torch's SDPA?"""
    q, k, v = (t.requires_grad_() for t in _qkv((2, 2, 7, 8), (2, 2, 7), dtype=torch.float64))
    grads = []
    for fn in (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
               lambda: scaled_dot_product_attention(q, k, v, is_causal=True),
               lambda: chunked_attention(q, k, v, is_causal=True, chunk_size=3),
               lambda: chunked_attention(q, k, v, is_causal=True, chunk_size=3, query_chunk_size=2)):
        out = fn()
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    for ours in grads[1:]:
        for a, b in zip(ours, grads[0]):
            torch.testing.assert_close(a, b)


def test_bf16_is_close_and_keeps_dtype():
    """In bf16, do both implementations return bf16 and stay within bf16 rounding of the fp32 result?"""
    q, k, v = _qkv((1, 2, 64, 32), (1, 2, 64))
    ref = F.scaled_dot_product_attention(q, k, v)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    for out in (scaled_dot_product_attention(qb, kb, vb), chunked_attention(qb, kb, vb, chunk_size=16)):
        assert out.dtype == torch.bfloat16
        assert (out.float() - ref).abs().max() < 0.05


def test_online_softmax_update_equals_softmax():
    """Folding score blocks one by one with the online update gives exactly softmax(scores)·v."""
    g = torch.Generator().manual_seed(3)
    scores, v = torch.randn(4, 10, generator=g) * 5, torch.randn(10, 3, generator=g)
    m, l, acc = torch.full((4, 1), -math.inf), torch.zeros(4, 1), torch.zeros(4, 3)
    for start in range(0, 10, 4):
        m, l, acc = online_softmax_update(m, l, acc, scores[:, start:start + 4], v[start:start + 4])
    torch.testing.assert_close(acc / l, scores.softmax(-1) @ v)
    torch.testing.assert_close(m, scores.amax(-1, keepdim=True))


def test_flops_and_memory_match_a_hand_count():
    """Do the cost functions match counts done by hand?"""
    # B=2, H=3, N_q=5, N_k=7, d=4: QKᵀ is 2·3·5·7 dot products of length 4 = 840 multiply-adds = 1680 FLOPs,
    # P·V the same again: 3360 in total; causal halves it.
    assert attention_flops(2, 3, 5, 7, 4) == 3360
    assert attention_flops(2, 3, 5, 7, 4, causal=True) == 1680
    # 2·3·5·7 = 210 scores of 4 bytes (fp32) or 2 bytes (bf16).
    assert attention_memory_bytes(2, 3, 5, 7) == 840
    assert attention_memory_bytes(2, 3, 5, 7, torch.bfloat16) == 420
    assert attention_memory_bytes(2, 3, 5, 7, chunk_size=2) == 240
    assert attention_memory_bytes(2, 3, 5, 7, chunk_size=100) == 840
    assert attention_memory_bytes(1, 1, 2, 2, 8) == 32


def test_flops_grow_quadratically():
    """Doubling the sequence length quadruples the FLOPs and the score memory."""
    assert attention_flops(1, 8, 2048, 2048, 64) == 4 * attention_flops(1, 8, 1024, 1024, 64)
    assert attention_memory_bytes(1, 8, 2048, 2048) == 4 * attention_memory_bytes(1, 8, 1024, 1024)


def test_multihead_attention_matches_torch_module():
    """With copied weights, does our MultiHeadAttention equal torch.nn.MultiheadAttention for every backend?"""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(3, 10, 16)
    ours = MultiHeadAttention(16, 4).load_from_torch(mha)
    additive = torch.randn(10, 10)
    expected, expected_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    expected_causal, _ = mha(x, x, x, attn_mask=torch.nn.Transformer.generate_square_subsequent_mask(10),
                             need_weights=False)
    expected_additive, _ = mha(x, x, x, attn_mask=additive, need_weights=False)
    for backend in ("naive", "chunked", "sdpa"):
        ours.backend, ours.chunk_size = backend, 3
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x, is_causal=True), expected_causal, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x, attn_mask=additive), expected_additive, atol=1e-5, rtol=1e-5)
    out, w = ours(x, need_weights=True)
    torch.testing.assert_close(w, expected_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_with_different_lengths():
    """Does cross-attention (query length ≠ key length) match torch's module?"""
    torch.manual_seed(1)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x, mem = torch.randn(2, 3, 8), torch.randn(2, 7, 8)
    ours = MultiHeadAttention(8, 2, backend="chunked", chunk_size=2).load_from_torch(mha)
    torch.testing.assert_close(ours(x, mem, mem), mha(x, mem, mem, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_tiny_transformer_backends_agree_and_maps_have_shape():
    """Do the three backends give the same logits, and are attention maps (batch, heads, L, L) distributions?"""
    torch.manual_seed(0)
    model = TinyTransformer(10, 8, d_model=16, num_heads=2, num_layers=2).eval()
    tokens, targets = reversal_data(5, 8, 10)
    ref = model(tokens)
    for backend in ("naive", "chunked"):
        for block in model.blocks:
            block.attn.backend = backend
        torch.testing.assert_close(model(tokens), ref, atol=1e-5, rtol=1e-5)
    maps = model.attention_maps(tokens)
    assert len(maps) == 2 and maps[0].shape == (5, 2, 8, 8)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(5, 2, 8))
    assert sequence_loss(ref, targets).item() > 0
    # The smallest vocabulary (two tokens) and length one are valid; one token is not.
    assert TinyTransformer(2, 1)(torch.zeros(3, 1, dtype=torch.long)).shape == (3, 1, 2)
    with pytest.raises(ValueError, match="vocab_size must be >= 2"):
        TinyTransformer(1, 4)


@pytest.mark.slow
def test_tiny_transformer_learns_to_reverse():
    """Does a short training run with sustainlab.optim.train reach high accuracy and an anti-diagonal attention map?"""
    from sustainlab.optim import train

    torch.manual_seed(0)
    tokens, targets = reversal_data(1536, 8, 10, random_state=0)
    test_tokens, test_targets = reversal_data(512, 8, 10, random_state=1)
    model = TinyTransformer(10, 8, d_model=32, num_heads=1, num_layers=1, d_ff=64)
    batches = list(zip(tokens.split(64), targets.split(64)))
    train(model, batches, torch.optim.Adam(model.parameters(), lr=1e-2), epochs=4, loss_fn=sequence_loss,
          stop_when=lambda history: history.loss[-1] < 0.05)
    token_acc, _ = sequence_accuracy(model, test_tokens, test_targets)
    assert token_acc > 0.95
    attn = model.attention_maps(test_tokens)[0].mean((0, 1))
    assert (attn.argmax(-1) == torch.arange(7, -1, -1)).all()


def test_reversal_data_is_reversed_and_seeded():
    tokens, targets = reversal_data(4, 6, 5, random_state=2)
    assert torch.equal(targets, tokens.flip(-1))
    assert torch.equal(reversal_data(4, 6, 5, random_state=2)[0], tokens)
    assert tokens.max() < 5


def test_peak_memory_sees_the_score_matrix_and_chunking_shrinks_it():
    """Does the CPU peak-memory probe see the N×N score matrix, and is chunked attention's peak several times lower?"""
    q, k, v = _qkv((1, 2, 512, 32), (1, 2, 512))
    scores = attention_memory_bytes(1, 2, 512, 512)
    naive = peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v), device="cpu")
    chunked = peak_memory_bytes(lambda: chunked_attention(q, k, v, chunk_size=64, query_chunk_size=512), device="cpu")
    tiled = peak_memory_bytes(lambda: chunked_attention(q, k, v, chunk_size=64, query_chunk_size=64), device="cpu")
    assert naive >= 2 * scores  # scores and weights coexist
    assert chunked * 4 <= naive
    assert tiled <= chunked


def test_time_attention_measures_the_call():
    """Does time_attention run warm-up plus timed calls, and report at least the time the call takes?"""
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    median = time_attention(slow, repeats=3, warmup=2)
    assert len(calls) == 5
    assert 0.02 <= median < 5
    assert 0.02 <= time_attention(slow, repeats=2, warmup=0, reduce="min") <= time_attention(slow, repeats=1) + 1
    with pytest.raises(ValueError, match="reduce must be one of"):
        time_attention(slow, reduce="mean")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch explains why flash refuses 3-D inputs
def test_sdpa_kernel_report_matches_what_torch_accepts():
    """On the CPU torch's fused ("flash") kernel takes 4-D inputs and falls back to "math" for 3-D ones."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q4, k4, v4 = _qkv((1, 2, 16, 8), (1, 2, 16), d_v=8)
    q3, k3, v3 = (t[0] for t in (q4, k4, v4))
    assert sdpa_kernel_used(q4, k4, v4) == "flash"
    assert sdpa_kernel_used(q4, k4, v4, is_causal=True) == "flash"
    assert sdpa_kernel_used(q3, k3, v3) == "math"
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # the oracle: torch runs 4-D inputs with flash alone ...
        F.scaled_dot_product_attention(q4, k4, v4)
    with pytest.raises(RuntimeError), sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # ... and refuses 3-D ones
        F.scaled_dot_product_attention(q3, k3, v3)


@pytest.mark.gpu
@requires_cuda
def test_cuda_matches_cpu_and_reports_kernel():
    """On a GPU: do both implementations match torch's SDPA there, in fp32 and fp16, and is a kernel reported?"""
    q, k, v = (t.cuda() for t in _qkv((2, 4, 128, 64), (2, 4, 128)))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, is_causal=True), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chunked_attention(q, k, v, is_causal=True, chunk_size=32), expected, atol=1e-4,
                               rtol=1e-4)
    qh, kh, vh = (t.half() for t in (q, k, v))
    half = chunked_attention(qh, kh, vh, chunk_size=32).float()
    assert (half - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-2
    assert sdpa_kernel_used(qh, kh, vh) in ("flash", "efficient", "cudnn", "math")
    assert peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v), device="cuda") > 0


Q = torch.zeros(1, 4, 8)
K = torch.zeros(1, 4, 8)
V = torch.zeros(1, 4, 8)

BAD_INPUTS = [
    (dict(k=torch.zeros(1, 4, 6)), ValueError, "same head dimension"),
    (dict(v=torch.zeros(1, 5, 8)), ValueError, "same length"),
    (dict(k=torch.zeros(3, 4, 8), v=torch.zeros(3, 4, 8), q=torch.zeros(2, 4, 8)), ValueError, "do not broadcast"),
    (dict(attn_mask=torch.ones(3, 4, dtype=torch.bool)), ValueError, "does not broadcast"),
    (dict(attn_mask=torch.ones(4, 4, dtype=torch.bool), is_causal=True), ValueError, "not both"),
    (dict(attn_mask=torch.ones(4, 4, dtype=torch.long)), TypeError, "boolean"),
    (dict(attn_mask=torch.ones(4, 4, dtype=torch.float64)), TypeError, "dtype of q"),
    (dict(k=torch.zeros(1, 4, 8, dtype=torch.float64)), TypeError, "same dtype"),
    (dict(q=torch.zeros(1, 4, 8, dtype=torch.long)), TypeError, "floating-point"),
    (dict(q=[[0.0]]), TypeError, "torch.Tensor"),
    (dict(q=torch.zeros(8)), ValueError, "at least 2 dimensions"),
    (dict(scale=0.0), ValueError, "scale must be > 0"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_raises_clear_errors(kwargs, error, message):
    args = dict(q=Q, k=K, v=V) | kwargs
    with pytest.raises(error, match=message):
        scaled_dot_product_attention(**args)
    with pytest.raises(error, match=message):
        chunked_attention(args.pop("q"), args.pop("k"), args.pop("v"), chunk_size=2, **args)


@pytest.mark.parametrize("chunk, error, message", [(0, ValueError, "must be >= 1"), (-3, ValueError, "must be >= 1"),
                                                    (2.5, TypeError, "must be an integer"),
                                                    (2.0, TypeError, "must be an integer"),
                                                    (True, TypeError, "must be an integer")])
def test_bad_chunk_size(chunk, error, message):
    with pytest.raises(error, match=f"^chunk_size {message}"):
        chunked_attention(Q, K, V, chunk_size=chunk)
    with pytest.raises(error, match=f"^query_chunk_size {message}"):
        chunked_attention(Q, K, V, chunk_size=2, query_chunk_size=chunk)
    with pytest.raises(error, match=f"^chunk_size {message}"):
        MultiHeadAttention(8, 2, chunk_size=chunk)


def test_one_integer_rule_for_chunk_sizes():
    """numpy integers are integers for chunked_attention as for MultiHeadAttention (numbers.Integral, not bool)."""
    expected = scaled_dot_product_attention(Q, K, V)
    out = chunked_attention(Q, K, V, chunk_size=np.int64(2), query_chunk_size=np.int32(3))
    torch.testing.assert_close(out, expected)
    assert MultiHeadAttention(8, 2, backend="chunked", chunk_size=np.int64(2)).chunk_size == 2


def test_mask_is_the_fourth_argument_as_in_sdpa():
    """chunked_attention(q, k, v, mask) means what F.scaled_dot_product_attention(q, k, v, mask) means."""
    q, k, v = _qkv((2, 3, 6, 8), (2, 3, 6))
    mask = _masks(q, k)["bool"]["attn_mask"]
    expected = F.scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(chunked_attention(q, k, v, mask), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_attention(q, k, v, mask, False, None, chunk_size=2), expected, atol=1e-5,
                               rtol=1e-5)
    with pytest.raises(TypeError, match="is_causal must be True or False, got Tensor"):
        chunked_attention(q, k, v, mask, mask)
    with pytest.raises(TypeError, match="is_causal must be True or False"):
        scaled_dot_product_attention(q, k, v, None, mask)


def test_old_positional_chunk_size_still_works_with_a_deprecation_warning():
    """An integer in the mask's place is the old positional chunk_size (notebooks written before the change)."""
    q, k, v = _qkv((1, 2, 7, 8), (1, 2, 7))
    with pytest.warns(DeprecationWarning, match="chunk_size=... by keyword"):
        old = chunked_attention(q, k, v, 3, is_causal=True)
    torch.testing.assert_close(old, chunked_attention(q, k, v, is_causal=True, chunk_size=3))
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="chunk_size must be >= 1"):
        chunked_attention(q, k, v, 0)


def test_default_tiles_the_queries_and_keeps_memory_per_block():
    """Does the default walk over query blocks: its peak is an explicit tiling's, well below all queries at once?"""
    q, k, v = _qkv((1, 2, 2048, 16), (1, 2, 2048), d_v=16)
    with torch.no_grad():
        default = peak_memory_bytes(lambda: chunked_attention(q, k, v), device="cpu")
        all_queries = peak_memory_bytes(lambda: chunked_attention(q, k, v, query_chunk_size=2048), device="cpu")
        tiled = peak_memory_bytes(lambda: chunked_attention(q, k, v, query_chunk_size=256), device="cpu")
        torch.testing.assert_close(chunked_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                                   atol=1e-5, rtol=1e-5)
    block = attention_memory_bytes(1, 2, 2048, 2048, chunk_size=512)  # all queries against one key block
    assert all_queries >= block
    assert default <= tiled * 1.1 + 2**16
    assert default * 2 < all_queries


def test_sequence_accuracy_restores_the_training_mode():
    """sequence_accuracy evaluates in eval mode and leaves the model in the mode it found it in, as train does."""
    torch.manual_seed(0)
    model = TinyTransformer(10, 6, d_model=8, num_heads=2)
    tokens, targets = reversal_data(8, 6, 10)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    for training in (True, False):
        model.train(training)
        token_acc, seq_acc = sequence_accuracy(model, tokens, targets, batch_size=3)
        assert model.training is training
        assert set(seen) == {False}
        hit = model(tokens).argmax(-1) == targets
        assert token_acc == pytest.approx(hit.float().mean().item())
        assert seq_acc == pytest.approx(hit.all(-1).float().mean().item())
        seen.clear()


def test_reversal_data_random_state_and_deprecated_seed():
    tokens, _ = reversal_data(4, 6, 5, random_state=2)
    with pytest.warns(DeprecationWarning, match="random_state"):
        old, _ = reversal_data(4, 6, 5, seed=2)
    assert torch.equal(old, tokens)
    assert not torch.equal(reversal_data(4, 6, 5, random_state=3)[0], tokens)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: MultiHeadAttention(10, 3), ValueError, "divisible by num_heads"),
        (lambda: MultiHeadAttention(8, 2, backend="flash"), ValueError, "backend must be one of"),
        (lambda: MultiHeadAttention(8, 2)(torch.zeros(1, 3, 6)), ValueError, "query must have shape"),
        (lambda: MultiHeadAttention(8, 2).load_from_torch(torch.nn.MultiheadAttention(8, 4)), ValueError, "sizes"),
        (lambda: attention_flops(1, 1, 0, 4, 2), ValueError, "n_q must be >= 1"),
        (lambda: attention_memory_bytes(1, 1, 4, 4, chunk_size=0), ValueError, "chunk_size must be >= 1"),
        (lambda: TinyTransformer(10, 4)(torch.zeros(1, 5, dtype=torch.long)), ValueError, "length ≤ 4"),
        (lambda: causal_mask(0), ValueError, "n_q must be >= 1"),
    ],
)
def test_bad_module_and_cost_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------------------------------------------------
# attention: dense against attention-score FLOPs
# ----------------------------------------------------------------------------------------------------------------------


def test_dense_flops_count_the_weights_of_a_real_block():
    d_model, d_ff = 32, 96
    block = att.TransformerBlock(d_model, num_heads=4, d_ff=d_ff)
    weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, torch.nn.Linear))
    assert att.block_flops_per_token(d_model, 10, d_ff=d_ff)["dense"] == 2 * weights


def test_attention_flops_per_token_match_attention_flops():
    d_model, heads, n = 64, 8, 100
    per_call = att.attention_flops(1, heads, n, n, d_model // heads)
    assert att.block_flops_per_token(d_model, n)["attention"] * n == per_call


@pytest.mark.parametrize("d_model", [64, 768, 12288])
def test_crossover_is_where_the_two_terms_meet(d_model):
    n = att.attention_crossover_length(d_model)
    assert n == 6 * d_model and att.attention_crossover_length(d_model, causal=True) == 12 * d_model
    flops = att.block_flops_per_token(d_model, int(n))
    assert flops["dense"] == flops["attention"]


def test_gpt3_attention_share_is_the_published_order():
    """Kaplan et al. (2020): 2·n_layer·n_ctx·d against 2N; for GPT-3 (d 12288, context 2048) about 1.4 %."""
    flops = att.block_flops_per_token(12288, 2048, causal=True)
    assert flops["attention"] / flops["dense"] == pytest.approx(2048 / (12 * 12288))
    assert 0.013 < flops["attention"] / sum(flops.values()) < 0.015


def test_block_flops_validate_their_arguments():
    with pytest.raises(ValueError, match="d_model"):
        att.block_flops_per_token(0, 10)
    with pytest.raises(TypeError, match="n_ctx"):
        att.block_flops_per_token(8, 2.5)


# --- the chapter's exercises (sustainlab/checks/attention.py) against the package and torch -------------------------


def test_exercise_references_agree_with_the_package_and_torch():
    """The checks' references are independent code: each matches what the package (and torch) compute."""
    from torch.nn.attention.bias import causal_lower_right

    from sustainlab.checks import attention as chapter_checks

    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8)
    mask = torch.rand(5, 7) > 0.4
    mask[2] = False
    eye = torch.eye(7).expand(2, 3, 7, 7)
    _, weights = att.scaled_dot_product_attention(q, k, eye, attn_mask=mask, return_weights=True)
    torch.testing.assert_close(chapter_checks._reference_weights()(q, k, mask), weights)
    for n_q, n_k in ((1, 1), (1, 6), (3, 7), (5, 5)):
        expected = causal_lower_right(n_q, n_k)._materialize()
        assert torch.equal(chapter_checks._reference_causal()(n_q, n_k), expected)
    for d, d_ff, n, causal in ((512, 2048, 4096, False), (64, 64, 900, True), (768, 3072, 2048, True)):
        flops = att.block_flops_per_token(d, n, d_ff=d_ff, causal=causal)
        assert chapter_checks._flops_per_token(d, d_ff, n, causal) == (flops["dense"], flops["attention"])


@pytest.mark.parametrize("exercise_id, wrong", [("att-1", "_wrong_delegating_weights"),
                                                ("att-1", "_wrong_delegating_torch_sdpa"),
                                                ("att-2", "_wrong_delegating_causal"),
                                                ("att-3", "_wrong_delegating_dominated"),
                                                ("att-5", "_wrong_delegating_online")])
def test_delegating_answers_fail_only_because_the_package_is_unavailable(exercise_id, wrong, monkeypatch):
    """att-1, att-3 and att-5's delegating answers are otherwise right: the block is what fails them (not vacuous).
    att-2's is wrong as well (the package's mask is top-left aligned), and fails either way."""
    import contextlib

    from sustainlab.checks import attention as chapter_checks
    from sustainlab.checks import get_exercise
    from sustainlab.checks._core import run_check

    answer = getattr(chapter_checks, wrong)()
    passed, hint = run_check(get_exercise(exercise_id), answer)
    assert not passed and "not available during this check" in hint
    monkeypatch.setattr(chapter_checks, "unavailable", lambda *functions: contextlib.nullcontext())
    passed, hint = run_check(get_exercise(exercise_id), answer)
    assert passed == (exercise_id != "att-2"), hint
    if exercise_id == "att-2":
        assert "newest query" in hint


def test_unavailable_blocks_a_builtin_attribute_and_restores_it():
    from sustainlab.checks._core import unavailable

    original = F.scaled_dot_product_attention
    with pytest.raises(ZeroDivisionError):
        with unavailable((F, "scaled_dot_product_attention")):
            with pytest.raises(RuntimeError, match="not available"):
                F.scaled_dot_product_attention(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2))
            1 / 0
    assert F.scaled_dot_product_attention is original
