"""Exercise checks for ``notebooks/02_attention.ipynb`` (ids ``att-*``, chapter module :mod:`sustainlab.attention`).

- ``att-1`` (build): ``attention_weights(q, k, mask=None)``, softmax(q·kᵀ/√d) with a boolean mask, any leading batch
  dimensions, and all-zero weights for a query that may see no key;
- ``att-2`` (build): ``make_causal_mask(n_q, n_k)`` for decoding with a cache: the queries are the *last* ``n_q`` of
  ``n_k`` positions (bottom-right aligned, unlike torch's ``is_causal`` and ``att.causal_mask``);
- ``att-3`` (interpret): ``attention_dominated(models)``, the models whose attention scores cost more FLOPs per token
  than their weights at their context length, for any feed-forward width;
- ``att-4`` (measure): ``fit_time_exponent(run, lengths, repeats)``, the exponent of t = cNᵖ from interleaved rounds,
  with one exponent per round as its spread;
- ``att-5`` (build): ``online_update(m, l, acc, scores_block, v_block)``, the online-softmax step, including blocks in
  which a row is entirely masked;
- ``att-1-hidden``: what the visible check does not show (4-D inputs with a broadcast mask, float64, a single query,
  very large scores).

**No delegation.** While a checker calls the learner's answer, the functions that would solve the exercise are made
unavailable (:func:`._core.unavailable` swaps their code, so names imported earlier are blocked too; torch's built-in
``F.scaled_dot_product_attention``, which would give att-1's weights with identity values, is swapped out of
``torch.nn.functional`` for the duration): ``att.scaled_dot_product_attention`` (att-1), ``att.causal_mask`` and
torch's ``causal_lower_right`` (att-2; both would also give the top-left mask, which the check rejects),
``att.block_flops_per_token`` and ``att.attention_crossover_length`` (att-3), ``att.online_softmax_update`` and
``att.chunked_attention`` (att-5). att-4 has no package function to delegate to: its delegating answer returns
``compare_interleaved``'s result as it is, and fails. Each exercise's ``wrong`` tuple holds its delegating answer
(``tests/test_checks.py``); ``tests/test_attention.py`` shows that the block, not a wrong value, is what fails it.
"""

from __future__ import annotations

import math
import types

import numpy as np

from ._core import (CheckFailed, Exercise, Raised, compare_close, expect, expect_close, expect_function,
                    interleaved_times, is_finite_number, unavailable)

__all__ = ["EXERCISES"]


def _rand(*shape, seed=0, scale=1.0, dtype=None):
    import torch

    g = torch.Generator().manual_seed(seed)
    out = torch.randn(*shape, generator=g) * scale
    return out if dtype is None else out.to(dtype)


def _copy_of(function):
    """A copy of a package function that keeps working while the original is blocked (for references only)."""
    return types.FunctionType(function.__code__, function.__globals__, function.__name__, function.__defaults__,
                              function.__closure__)


# ---------------------------------------------------------------------------------------------------------- att-1


def _softmax_or_zero(scores):
    """Softmax over the last axis; a row of -inf only (a query with no allowed key) gives zeros, not NaN."""
    import torch

    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)


def _reference_weights():
    def attention_weights(q, k, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return _softmax_or_zero(scores)

    return attention_weights


def _check_weights(attention_weights) -> None:
    import torch.nn.functional as F

    from .. import attention as att

    expect_function(attention_weights, "att-1", "attention_weights")
    with unavailable(att.scaled_dot_product_attention, att._naive_attention, (F, "scaled_dot_product_attention")):
        _check_weights_values(attention_weights)


def _check_weights_values(attention_weights) -> None:
    import torch

    reference = _reference_weights()
    q, k = _rand(3, 4, seed=1), _rand(5, 4, seed=2)
    got = attention_weights(q, k)
    expect(hasattr(got, "shape"), f"return a tensor of weights, got {type(got).__name__}.")
    expect(tuple(got.shape) == (3, 5), f"for 3 queries and 5 keys the weights should have shape (3, 5) (one row per "
                                       f"query), got {tuple(got.shape)}.")
    expect_close(got.sum(-1), torch.ones(3), "each query's weights must form a probability distribution over the "
                                             "keys: a row should sum to 1.", rtol=1e-5, atol=1e-6)
    expect(not torch.allclose(got, torch.softmax(q @ k.T, -1), atol=1e-4), "the scores need a scale: without it their "
           "spread grows with the vector size d and the softmax saturates.")
    expect_close(got, reference(q, k), "for 3 queries and 5 keys of size 4 the weights are not right: compare each "
                 "query with each key, scale, then normalise each query's row.", rtol=1e-5, atol=1e-6)
    q, k = _rand(2, 3, 6, 8, seed=3), _rand(2, 3, 7, 8, seed=4)
    got = attention_weights(q, k)
    expect(tuple(got.shape) == (2, 3, 6, 7), f"with leading batch and head axes, q of shape (2, 3, 6, 8) and k of "
           f"shape (2, 3, 7, 8) should give weights of shape (2, 3, 6, 7), got {tuple(got.shape)}: only the query and "
           "key axes take part in the product.")
    expect_close(got, reference(q, k), "right for one sequence but not with batch and head axes.", rtol=1e-5,
                 atol=1e-6)
    q, k = _rand(4, 8, seed=5), _rand(6, 8, seed=6)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(7)) > 0.4
    mask[:, 0] = True
    got = attention_weights(q, k, mask)
    expect(bool((got[~mask] == 0).all()), "where the mask is False a key must get a weight of exactly 0.")
    expect_close(got, reference(q, k, mask), "the masked keys are at 0, but each row must still be a probability "
                 "distribution over the keys its query may see.", rtol=1e-5, atol=1e-6)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    got = attention_weights(_rand(3, 4, seed=8), _rand(5, 4, seed=9), mask)
    expect(bool(torch.isfinite(got).all()), "a query that may see no key at all got NaN weights: give it all-zero "
                                            "weights instead.")
    expect(bool((got[1] == 0).all()), "a query that may see no key at all should get all-zero weights.")
    q, k = _rand(3, 16, seed=10, scale=40.0), _rand(4, 16, seed=11, scale=40.0)
    got = attention_weights(q, k)
    expect(bool(torch.isfinite(got).all()), "with scores in the hundreds your weights overflow: keep the softmax "
                                            "finite (what may you subtract from a row's scores without changing its "
                                            "softmax?).")
    expect_close(got, reference(q, k), "right for small scores but not for very large ones.", rtol=1e-4, atol=1e-5)


def _probes_weights(rng):
    import torch

    def t(*shape):
        return torch.from_numpy(rng.normal(size=shape).astype("float32"))

    d, n_q, n_k = int(rng.integers(2, 24)), int(rng.integers(2, 6)), int(rng.integers(2, 8))
    mask = torch.from_numpy(rng.random((n_q, n_k)) > 0.3)
    mask[0] = False
    return [(t(n_q, d), t(n_k, d)), (t(2, n_q, d), t(2, n_k, d), mask)]


def _wrong_weights_unscaled():
    import torch

    def attention_weights(q, k, mask=None):
        scores = q @ k.transpose(-2, -1)
        return torch.nan_to_num(torch.softmax(scores if mask is None else scores.masked_fill(~mask, -math.inf), -1))

    return attention_weights


def _wrong_weights_masked_row_nan():
    import torch

    def attention_weights(q, k, mask=None):  # softmax of an all -inf row is NaN
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return torch.softmax(scores if mask is None else scores.masked_fill(~mask, float("-inf")), -1)

    return attention_weights


def _wrong_weights_mask_zeroed_after():
    import torch

    def attention_weights(q, k, mask=None):  # zeroes masked weights after the softmax: rows no longer sum to 1
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)
        return w if mask is None else w * mask

    return attention_weights


def _wrong_weights_unstable():
    import torch

    def attention_weights(q, k, mask=None):  # exp of the raw scores overflows
        e = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
        if mask is not None:
            e = e * mask
        total = e.sum(-1, keepdim=True)
        return e / torch.where(total > 0, total, torch.ones_like(total))

    return attention_weights


def _wrong_delegating_weights():
    import torch

    from .. import attention as att

    def attention_weights(q, k, mask=None):  # the package's weights: values = identity
        return att.scaled_dot_product_attention(q, k, torch.eye(k.shape[-2]).expand(*k.shape[:-1], -1),
                                                attn_mask=mask, return_weights=True)[1]

    return attention_weights


def _wrong_delegating_torch_sdpa():
    import torch
    import torch.nn.functional as F

    return lambda q, k, mask=None: F.scaled_dot_product_attention(
        q, k, torch.eye(k.shape[-2]).expand(*k.shape[:-1], -1), attn_mask=mask)


# ---------------------------------------------------------------------------------------------------- att-1-hidden


#: What each hidden probe shows, in the order of :func:`_probes_weights_hidden`.
_HIDDEN_CASES = ("4-D inputs with a mask of shape (n_q, n_k)", "a key-padding mask of shape (1, n_k)",
                 "float64 inputs", "a single query", "scores in the thousands")


def _probes_weights_hidden(rng):
    import torch

    def t(*shape, scale=1.0, dtype="float32"):
        return torch.from_numpy((rng.normal(size=shape) * scale).astype(dtype))

    n_q, n_k, d = int(rng.integers(3, 6)), int(rng.integers(4, 8)), int(rng.integers(3, 9))
    padding = torch.from_numpy(rng.random((1, n_k)) > 0.3)
    padding[0, 0] = True
    return [
        (t(2, 3, n_q, d), t(2, 3, n_k, d), torch.from_numpy(rng.random((n_q, n_k)) > 0.3)),
        (t(2, n_q, d), t(2, n_k, d), padding),
        (t(n_q, d, dtype="float64"), t(n_k, d, dtype="float64"), None),
        (t(1, d), t(n_k, d), None),
        (t(n_q, 32, scale=60.0), t(n_k, 32, scale=60.0), None),
    ]


def _compare_weights_hidden(student, reference, probes) -> str | None:
    import torch

    for got, want, what in zip(student, reference, _HIDDEN_CASES):
        if isinstance(got, Raised):
            if got.kind == "NotImplementedError":
                return "attention_weights is not implemented yet."
            return f"attention_weights raised {got.kind} for {what}: it must work for any batch axes and masks."
        if not isinstance(got, torch.Tensor):
            return f"attention_weights returned {type(got).__name__} for {what}, not a tensor."
        if tuple(got.shape) != tuple(want.shape):
            return f"for {what} the weights should have shape {tuple(want.shape)}, got {tuple(got.shape)}."
        if got.dtype != want.dtype:
            return f"for {what} the weights came back as {got.dtype}: keep the inputs' dtype."
        if not bool(torch.isfinite(got).all()):
            return f"for {what} the weights hold NaN or inf."
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            return f"wrong weights for {what}: an answer tailored to the visible check's inputs?"
    return None


def _wrong_weights_2d_only():
    import torch

    def attention_weights(q, k, mask=None):  # swaps the first and last axes: right for one sequence only
        scores = q @ k.transpose(0, -1) / math.sqrt(q.shape[-1])
        return torch.nan_to_num(torch.softmax(scores if mask is None else scores.masked_fill(~mask, -math.inf), -1))

    return attention_weights


def _wrong_weights_float32():
    reference = _reference_weights()
    return lambda q, k, mask=None: reference(q.float(), k.float(), mask)


# ---------------------------------------------------------------------------------------------------------- att-2


def _reference_causal():
    import torch

    def make_causal_mask(n_q, n_k):
        return torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q)

    return make_causal_mask


def _check_causal(make_causal_mask) -> None:
    from torch.nn.attention import bias

    from .. import attention as att

    expect_function(make_causal_mask, "att-2", "make_causal_mask")
    with unavailable(att.causal_mask, bias.causal_lower_right):
        _check_causal_values(make_causal_mask)


def _check_causal_values(make_causal_mask) -> None:
    import torch

    reference = _reference_causal()
    for n in (1, 4):
        mask = make_causal_mask(n, n)
        expect(isinstance(mask, torch.Tensor), f"return a torch tensor, got {type(mask).__name__}.")
        expect(tuple(mask.shape) == (n, n), f"for n_q = n_k = {n} the mask should have shape ({n}, {n}), got "
                                            f"{tuple(mask.shape)}.")
        expect(mask.dtype == torch.bool, f"return a boolean mask (True = may attend), got dtype {mask.dtype}.")
        expect(bool(mask.diagonal().all()), "with as many queries as keys, every token may attend to itself.")
        expect(torch.equal(mask, reference(n, n)), "row i is query i and column j is key j: a query may see keys at "
                                                   "its own position and before, never after.")
    for n_q, n_k in ((1, 5), (2, 5), (3, 7)):
        mask = make_causal_mask(n_q, n_k)
        expect(isinstance(mask, torch.Tensor) and tuple(mask.shape) == (n_q, n_k),
               f"for {n_q} new queries and {n_k} keys the mask should have shape ({n_q}, {n_k}).")
        expect(bool(mask[-1].all()), f"with {n_q} new queries after {n_k - n_q} cached tokens, the newest query is "
                                     f"the last token of the sequence: it may see every key.")
        expect(torch.equal(mask, reference(n_q, n_k)), f"for {n_q} new queries and {n_k} keys: query i is the "
               "token at position n_k - n_q + i; it may see the keys up to its own position.")


def _probes_causal(rng):
    probes = []
    for _ in range(3):
        n_k = int(rng.integers(2, 13))
        probes.append((int(rng.integers(1, n_k + 1)), n_k))
    return probes


def _wrong_causal_top_left():
    import torch

    return lambda n_q, n_k: torch.ones(n_q, n_k, dtype=torch.bool).tril()


def _wrong_delegating_causal():
    from .. import attention as att

    return lambda n_q, n_k: att.causal_mask(n_q, n_k)


# ---------------------------------------------------------------------------------------------------------- att-3


def _flops_per_token(d_model, d_ff, n_ctx, causal):
    dense = 2 * (4 * d_model * d_model + 2 * d_model * d_ff)
    attention = 4 * n_ctx * d_model
    return dense, attention / 2 if causal else attention


def _reference_dominated():
    def attention_dominated(models):
        out = []
        for row in models.itertuples(index=False):
            dense, attention = _flops_per_token(int(row.d_model), int(row.d_ff), int(row.n_ctx), bool(row.causal))
            if attention > dense:
                out.append(str(row.name))
        return out

    return attention_dominated


def _models_table(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["name", "d_model", "d_ff", "n_ctx", "causal"])


#: Each case isolates one mistake: the feed-forward width is not 4·d_model, the causal halving, a near tie.
_DOMINATED_CASES = (
    [("wide FFN", 512, 8192, 4096, False), ("usual FFN", 512, 2048, 4096, False)],
    [("decoder", 1024, 4096, 8192, True), ("encoder", 1024, 4096, 8192, False)],
    [("tie", 64, 256, 384, False), ("just over", 64, 256, 385, False), ("narrow FFN", 256, 256, 1024, False)],
)


def _check_dominated(attention_dominated) -> None:
    from .. import attention as att

    expect_function(attention_dominated, "att-3", "attention_dominated")
    reference = _reference_dominated()
    with unavailable(att.block_flops_per_token, att.attention_crossover_length):
        for rows in _DOMINATED_CASES:
            table = _models_table(rows)
            got = attention_dominated(table.copy())
            expect(isinstance(got, list) and all(isinstance(x, str) for x in got),
                   f"return a list of model names (str), got {type(got).__name__}.")
            want = reference(table)
            if got == want:
                continue
            names = [r[0] for r in rows]
            if "wide FFN" in names:
                raise CheckFailed("the feed-forward width is a column of the table: a wider feed-forward layer has "
                                  "more weights per token, so attention takes over later.")
            if "decoder" in names:
                raise CheckFailed("a causal (decoder) model's token attends, on average, to half its context.")
            raise CheckFailed("at exactly equal FLOPs attention does not cost *more*; keep the models in the table's "
                              "order.")


def _probes_dominated(rng):
    probes = []
    for _ in range(3):
        rows = []
        for i in range(int(rng.integers(4, 9))):
            d = int(rng.choice([64, 128, 256, 512, 768, 1024, 4096]))
            d_ff = int(d * rng.choice([1, 2, 4, 8]))
            rows.append((f"model {i}", d, d_ff, int(rng.choice([128, 512, 2048, 4096, 8192, 32768, 131072])),
                         bool(rng.random() < 0.5)))
        probes.append((_models_table(rows),))
    return probes


def _compare_dominated(student, reference, probes) -> str | None:
    for got, want in zip(student, reference):
        if isinstance(got, Raised):
            return got.describe() + " (on model tables the check had not shown before)"
        if not isinstance(got, list) or got != want:
            return ("right on the check's tables but not on other models: compare each model's two FLOP counts at "
                    "its own width, feed-forward width, context and causality.")
    return None


def _wrong_dominated_ignores_ffn():
    def attention_dominated(models):  # 24·d² for every model
        return [str(r.name) for r in models.itertuples(index=False)
                if 4 * r.n_ctx * r.d_model / (2 if r.causal else 1) > 24 * r.d_model ** 2]

    return attention_dominated


def _wrong_dominated_ignores_causal():
    def attention_dominated(models):
        return [str(r.name) for r in models.itertuples(index=False)
                if 4 * r.n_ctx * r.d_model > 2 * (4 * r.d_model ** 2 + 2 * r.d_model * r.d_ff)]

    return attention_dominated


def _wrong_delegating_dominated():
    from .. import attention as att

    def attention_dominated(models):
        return [str(r.name) for r in models.itertuples(index=False)
                if r.n_ctx > att.attention_crossover_length(int(r.d_model), d_ff=int(r.d_ff), causal=bool(r.causal))]

    return attention_dominated


# ---------------------------------------------------------------------------------------------------------- att-4


def _log_log_slope(lengths, seconds) -> float:
    return float(np.polyfit(np.log(np.asarray(lengths, dtype=float)), np.log(np.asarray(seconds, dtype=float)), 1)[0])


def _check_exponent(fit_time_exponent) -> None:
    expect_function(fit_time_exponent, "att-4", "fit_time_exponent")
    for lengths, repeats in (((64, 128, 256), 5), ((100, 200, 400, 800), 6)):
        counter = iter(range(1, 10**6))
        got = fit_time_exponent(lambda N: next(counter), list(lengths), repeats)
        times = interleaved_times(got, lengths, repeats, ("exponent", "round_exponents"), item="length N")
        expect(is_finite_number(got["exponent"]), "'exponent' must be one number.")
        expect_close(got["exponent"], _log_log_slope(lengths, np.median(times, axis=0)),
                     "'exponent' is the slope of the least-squares line through log N and log t, with t each "
                     "length's median time (the times you report).", rtol=1e-6)
        per_round = np.asarray(got["round_exponents"], dtype=float)
        expect(per_round.shape == (repeats,), f"return one exponent per round ({repeats}), got shape "
                                              f"{per_round.shape}.")
        expect_close(per_round, [_log_log_slope(lengths, times[r]) for r in range(repeats)],
                     "'round_exponents' fits the same line to each round's times on its own.", rtol=1e-6)


def _reference_exponent():
    from ..evidence import compare_interleaved

    def fit_time_exponent(run, lengths, repeats):
        timing = compare_interleaved({f"N = {N}": (lambda N=N: run(N)) for N in lengths}, repeats=repeats,
                                     energy=False)
        seconds = {N: timing.values(f"N = {N}").tolist() for N in lengths}
        logs = np.log(np.array(lengths, dtype=float))
        exponent = np.polyfit(logs, np.log([np.median(seconds[N]) for N in lengths]), 1)[0]
        per_round = [np.polyfit(logs, np.log([seconds[N][r] for N in lengths]), 1)[0] for r in range(repeats)]
        return {"seconds": seconds, "results": {N: timing.results(f"N = {N}") for N in lengths},
                "exponent": float(exponent), "round_exponents": [float(p) for p in per_round]}

    return fit_time_exponent


def _wrong_exponent_back_to_back():
    import time

    def fit_time_exponent(run, lengths, repeats):  # all rounds of one length, then the next
        seconds, results = {}, {}
        for N in lengths:
            seconds[N], results[N] = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                results[N].append(run(N))
                seconds[N].append(time.perf_counter() - start + 1e-9)
        logs = np.log(np.array(lengths, dtype=float))
        per_round = [float(np.polyfit(logs, np.log([seconds[N][r] for N in lengths]), 1)[0]) for r in range(repeats)]
        exponent = float(np.polyfit(logs, np.log([np.median(seconds[N]) for N in lengths]), 1)[0])
        return {"seconds": seconds, "results": results, "exponent": exponent, "round_exponents": per_round}

    return fit_time_exponent


def _wrong_exponent_ratio_of_ends():
    reference = _reference_exponent()

    def fit_time_exponent(run, lengths, repeats):  # slope from the first and last length only
        got = reference(run, lengths, repeats)
        med = [np.median(got["seconds"][N]) for N in lengths]
        got["exponent"] = float(np.log(med[-1] / med[0]) / np.log(lengths[-1] / lengths[0]))
        return got

    return fit_time_exponent


def _wrong_exponent_no_spread():
    reference = _reference_exponent()

    def fit_time_exponent(run, lengths, repeats):  # the medians' exponent repeated: no spread at all
        got = reference(run, lengths, repeats)
        got["round_exponents"] = [got["exponent"]] * repeats
        return got

    return fit_time_exponent


def _wrong_delegating_exponent():
    from ..evidence import compare_interleaved

    return lambda run, lengths, repeats: compare_interleaved({N: (lambda N=N: run(N)) for N in lengths},
                                                             repeats=repeats, energy=False)


# ---------------------------------------------------------------------------------------------------------- att-5


def _run_online(update, scores, v, block):
    import torch

    n_q = scores.shape[0]
    m = torch.full((n_q, 1), -math.inf)
    l = torch.zeros(n_q, 1)
    acc = torch.zeros(n_q, v.shape[-1])
    for start in range(0, scores.shape[1], block):
        result = update(m, l, acc, scores[:, start:start + block], v[start:start + block])
        expect(isinstance(result, tuple) and len(result) == 3, "return the updated state as a tuple (m, l, acc).")
        m, l, acc = result
    return m, l, acc


def _check_online(update) -> None:
    from .. import attention as att

    expect_function(update, "att-5", "online_update")
    with unavailable(att.online_softmax_update, att.chunked_attention, att._chunked_attention,
                     att._attend_query_block):
        _check_online_values(update)


def _check_online_values(update) -> None:
    import torch

    # One block only: no rescaling is needed yet, so this isolates the exponentials and sums.
    scores, v = _rand(3, 4, seed=5), _rand(4, 2, seed=6)
    m, l, acc = _run_online(update, scores, v, block=4)
    expect_close(m, scores.amax(-1, keepdim=True), "after one block, m should be each row's largest score.",
                 rtol=1e-5, atol=1e-6)
    expect_close(acc / l, scores.softmax(-1) @ v, "with a single block, acc / l should already equal softmax(scores) "
                 "@ v: check the exponentials and the sums.", rtol=1e-5, atol=1e-6)
    # Increasing scores: every block raises the maximum, so the old state must be rescaled each time.
    scores = torch.linspace(-3, 6, 12).repeat(2, 1) + _rand(2, 12, seed=7) * 0.1
    v = _rand(12, 3, seed=8)
    m, l, acc = _run_online(update, scores, v, block=3)
    expect_close(m, scores.amax(-1, keepdim=True), "m must be the running maximum over every block seen so far.",
                 rtol=1e-5, atol=1e-6)
    expect_close(acc / l, scores.softmax(-1) @ v, "when a new block raises the maximum, the old l and acc were "
                 "computed relative to the old maximum: they must be brought onto the new one before the new block "
                 "is added.", rtol=1e-4, atol=1e-5)
    # Large scores in shuffled order: the update must stay finite.
    scores = _rand(4, 20, seed=9, scale=60.0)
    v = _rand(20, 3, seed=10)
    m, l, acc = _run_online(update, scores, v, block=6)
    out = acc / l
    expect(bool(torch.isfinite(out).all()), "with scores around ±100 your result overflows: never exponentiate a "
                                            "large positive number.")
    expect_close(out, scores.softmax(-1) @ v, "right for small scores but not for large ones in random order: "
                 "check how the rescaling factor uses the old and the new maximum.", rtol=1e-4, atol=1e-5)
    # A causal mask in blocks: row 0's second block is fully masked; row 1 sees nothing until its second block;
    # row 2 sees nothing at all.
    scores = _rand(3, 8, seed=12, scale=2.0)
    scores[0, 4:] = -math.inf
    scores[1, :4] = -math.inf
    scores[2, :] = -math.inf
    v = _rand(8, 2, seed=13)
    m, l, acc = _run_online(update, scores, v, block=4)
    expect(bool(torch.isfinite(l).all() and torch.isfinite(acc).all()),
           "a block in which a row's scores are all -inf (masked) gave NaN: such a block must leave that row's "
           "state as it was, even before the row has seen any finite score.")
    expect_close(acc[:2] / l[:2], _softmax_or_zero(scores[:2]) @ v, "rows with masked blocks: the result "
                 "must equal the softmax over the keys each row may see.", rtol=1e-4, atol=1e-5)
    expect(bool((l[2] == 0).all() and (acc[2] == 0).all()), "a row that has seen only masked scores must keep "
                                                            "l = 0 and acc = 0.")


def _reference_online():
    from ..attention import online_softmax_update

    return _copy_of(online_softmax_update)


def _probes_online(rng):
    """One update from a state that has already seen a block, with a new block that raises some row maxima."""
    import torch

    def t(*shape, scale=1.0):
        return torch.from_numpy((rng.normal(size=shape) * scale).astype("float32"))

    n_q, d_v, chunk = int(rng.integers(2, 5)), int(rng.integers(1, 4)), int(rng.integers(2, 6))
    first = t(n_q, chunk, scale=3.0)
    m = first.amax(-1, keepdim=True)
    l = torch.exp(first - m).sum(-1, keepdim=True)
    acc = torch.exp(first - m) @ t(chunk, d_v)
    masked = t(n_q, chunk, scale=6.0)
    masked[0] = -math.inf
    return [(m, l, acc, t(n_q, chunk, scale=6.0), t(chunk, d_v)), (m, l, acc, masked, t(chunk, d_v))]


def _no_rescale():
    import torch

    def update(m, l, acc, s, v):
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        return m_new, l + p.sum(-1, keepdim=True), acc + p @ v

    return update


def _inverted_rescale():
    import torch

    def update(m, l, acc, s, v):
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        c = torch.nan_to_num(torch.exp(m_new - m), posinf=0.0)
        p = torch.exp(s - m_new)
        return m_new, l * c + p.sum(-1, keepdim=True), acc * c + p @ v

    return update


def _unstable():
    import torch

    def update(m, l, acc, s, v):
        p = torch.exp(s)
        return torch.maximum(m, s.amax(-1, keepdim=True)), l + p.sum(-1, keepdim=True), acc + p @ v

    return update


def _masked_rows_nan():
    import torch

    def update(m, l, acc, s, v):  # right for finite rows; exp(-inf - -inf) = NaN on a fully masked row
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        c, p = torch.exp(m - m_new), torch.exp(s - m_new)
        return m_new, l * c + p.sum(-1, keepdim=True), acc * c + p @ v

    return update


def _wrong_delegating_online():
    from .. import attention as att

    return lambda m, l, acc, s, v: att.online_softmax_update(m, l, acc, s, v)


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="att-1",
        checker=_check_weights,
        reference=_reference_weights,
        probes=_probes_weights,
        compare=compare_close("right on the check's examples but not on other queries, keys and masks: the scale "
                              "depends on the vector size d.", rtol=1e-4, atol=1e-5),
        wrong=(_wrong_weights_unscaled, _wrong_weights_masked_row_nan, _wrong_weights_mask_zeroed_after,
               _wrong_weights_unstable, _wrong_delegating_weights, _wrong_delegating_torch_sdpa),
    ),
    Exercise(
        id="att-1-hidden",
        hidden=True,
        answer="attention_weights",
        reference=_reference_weights,
        probes=_probes_weights_hidden,
        compare=_compare_weights_hidden,
        wrong=(_wrong_weights_unstable, _wrong_weights_2d_only, _wrong_weights_float32,
               lambda: _wrong_weights_2d_only()(_rand(3, 4), _rand(5, 4))),  # a result, not a function
    ),
    Exercise(
        id="att-2",
        checker=_check_causal,
        reference=_reference_causal,
        probes=_probes_causal,
        compare=compare_close("right for the check's sizes but not for other numbers of queries and keys: build "
                              "the mask from n_q and n_k."),
        wrong=(
            _wrong_causal_top_left,
            lambda: (lambda n_q, n_k: __import__("torch").ones(n_q, n_k, dtype=__import__("torch").bool).triu()),
            lambda: (lambda n_q, n_k: __import__("torch").ones(n_q, n_k).tril(n_k - n_q)),  # float, not bool
            _wrong_delegating_causal,
        ),
    ),
    Exercise(
        id="att-3",
        kind="interpret",
        checker=_check_dominated,
        reference=_reference_dominated,
        probes=_probes_dominated,
        compare=_compare_dominated,
        wrong=(_wrong_dominated_ignores_ffn, _wrong_dominated_ignores_causal, _wrong_delegating_dominated,
               lambda: (lambda models: [])),
    ),
    Exercise(
        id="att-4",
        kind="measure",
        checker=_check_exponent,
        reference=_reference_exponent,
        wrong=(_wrong_exponent_back_to_back, _wrong_exponent_ratio_of_ends, _wrong_exponent_no_spread,
               _wrong_delegating_exponent),
    ),
    Exercise(
        id="att-5",
        checker=_check_online,
        reference=_reference_online,
        probes=_probes_online,
        compare=compare_close("right on the check's blocks but not on a new state and block: rescale the old l and "
                              "acc by how much the maximum grew, and leave a fully masked row as it was.",
                              rtol=1e-4, atol=1e-5),
        wrong=(_no_rescale, _inverted_rescale, _unstable, _masked_rows_nan, _wrong_delegating_online),
    ),
)
