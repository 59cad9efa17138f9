"""Exercise checks for ``notebooks/02_attention.ipynb`` (ids ``att-1`` … ``att-3``)."""

from __future__ import annotations

import math

from ._core import Exercise, compare_close, expect, expect_close

__all__ = ["EXERCISES"]


def _rand(*shape, seed=0, scale=1.0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


# --- att-1: scaled scores --------------------------------------------------------------------------------------------


def _check_scores(scaled_scores) -> None:
    expect(callable(scaled_scores), 'pass your function itself, e.g. check("att-1", scaled_scores).')
    q, k = _rand(3, 4, seed=1), _rand(3, 4, seed=2)
    out = scaled_scores(q, k)
    expect(hasattr(out, "shape"), "return a tensor of scores.")
    expect_close(out, q @ k.T / 2.0, "for 3 queries and 3 keys of size 4, compare each query with each key, then "
                 "scale so the scores' spread does not grow with the vector size.", rtol=1e-5, atol=1e-6)
    q, k = _rand(2, 5, 16, seed=3), _rand(2, 7, 16, seed=4)
    out = scaled_scores(q, k)
    expect(tuple(out.shape) == (2, 5, 7), f"with q of shape (2, 5, 16) and k of shape (2, 7, 16) the scores should "
           f"have shape (2, n_queries, n_keys) = (2, 5, 7), got {tuple(out.shape)}: transpose only the last two axes "
           "of k.")
    expect_close(out, q @ k.transpose(-2, -1) / 4.0, "the scale factor depends on the size of the vectors (the last "
                 "axis): check it for d = 16.", rtol=1e-5, atol=1e-6)


def _reference_scores():
    return lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def _probes_scores(rng):
    import torch

    def t(*shape):
        return torch.from_numpy(rng.normal(size=shape).astype("float32"))

    d = int(rng.integers(2, 24))
    return [(t(3, d), t(5, d)), (t(2, 4, d), t(2, 6, d))]


# --- att-2: the causal mask ------------------------------------------------------------------------------------------


def _check_causal(make_mask) -> None:
    import torch

    expect(callable(make_mask), 'pass your function itself, e.g. check("att-2", make_causal_mask).')
    for n in (1, 4, 7):
        mask = make_mask(n)
        expect(isinstance(mask, torch.Tensor), "return a torch tensor.")
        expect(tuple(mask.shape) == (n, n), f"for n = {n} the mask should have shape ({n}, {n}), got "
               f"{tuple(mask.shape)}.")
        expect(mask.dtype == torch.bool, f"return a boolean mask (True = may attend), got dtype {mask.dtype}.")
        expect(bool(mask.diagonal().all()), "every token must be allowed to attend to itself (look at the diagonal).")
        expected = torch.ones(n, n, dtype=torch.bool).tril()
        expect(torch.equal(mask, expected), "row i is query i and column j is key j: a query may see keys at its own "
               "position and before, never after. Check which triangle you kept.")


def _reference_causal():
    import torch

    return lambda n: torch.ones(n, n, dtype=torch.bool).tril()


def _probes_causal(rng):
    return [(int(n),) for n in rng.integers(2, 13, size=3)]


# --- att-3: the online-softmax update --------------------------------------------------------------------------------


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
    expect(callable(update), 'pass your function itself, e.g. check("att-3", online_update).')
    # One block only: no rescaling is needed yet, so this isolates the exponentials and sums.
    scores, v = _rand(3, 4, seed=5), _rand(4, 2, seed=6)
    m, l, acc = _run_online(update, scores, v, block=4)
    expect_close(m, scores.amax(-1, keepdim=True), "after one block, m should be each row's largest score.",
                 rtol=1e-5, atol=1e-6)
    expect_close(acc / l, scores.softmax(-1) @ v, "with a single block, acc / l should already equal softmax(scores) "
                 "@ v: check the exponentials and the sums.", rtol=1e-5, atol=1e-6)
    # Increasing scores: every block raises the maximum, so the old state must be rescaled each time.
    import torch

    scores = torch.linspace(-3, 6, 12).repeat(2, 1) + _rand(2, 12, seed=7) * 0.1
    v = _rand(12, 3, seed=8)
    m, l, acc = _run_online(update, scores, v, block=3)
    expect_close(m, scores.amax(-1, keepdim=True), "m must be the running maximum over every block seen so far.",
                 rtol=1e-5, atol=1e-6)
    expect_close(acc / l, scores.softmax(-1) @ v, "when a new block raises the maximum, the old l and acc were "
                 "computed relative to the old maximum: they must be rescaled before adding the new block.",
                 rtol=1e-4, atol=1e-5)
    # Large scores in shuffled order: the update must stay finite (never exponentiate a large positive number).
    scores = _rand(4, 20, seed=9, scale=60.0)
    v = _rand(20, 3, seed=10)
    m, l, acc = _run_online(update, scores, v, block=6)
    out = acc / l
    expect(bool(torch.isfinite(out).all()), "with scores around ±100 your result overflows: exponentiate scores "
           "minus the running maximum, never the raw scores.")
    expect_close(out, scores.softmax(-1) @ v, "right for small scores but not for large ones in random order: "
                 "check how the rescaling factor uses the old and the new maximum.", rtol=1e-4, atol=1e-5)


def _reference_online():
    from ..attention import online_softmax_update

    return online_softmax_update


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
    return [(m, l, acc, t(n_q, chunk, scale=6.0), t(chunk, d_v))]


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


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        id="att-1",
        checker=_check_scores,
        reference=_reference_scores,
        probes=_probes_scores,
        compare=compare_close("right on the check's examples but not on other queries and keys: the scale depends on "
                              "the vector size d.", rtol=1e-4, atol=1e-5),
        wrong=(
            lambda: (lambda q, k: q @ k.transpose(-2, -1)),  # no scaling
            lambda: (lambda q, k: q @ k.transpose(-2, -1) / q.shape[-1]),  # divides by d, not sqrt(d)
            lambda: (lambda q, k: k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])),  # keys × queries
            lambda: (lambda q, k: q @ k.transpose(0, -1) / math.sqrt(q.shape[-1])),  # right for 2-D input only
        ),
    ),
    Exercise(
        id="att-2",
        checker=_check_causal,
        reference=_reference_causal,
        probes=_probes_causal,
        compare=compare_close("right for the check's sizes but not for other sequence lengths: build the mask from n."),
        wrong=(
            lambda: (lambda n: __import__("torch").ones(n, n, dtype=__import__("torch").bool).triu()),
            lambda: (lambda n: __import__("torch").ones(n, n, dtype=__import__("torch").bool).tril(-1)),
            lambda: (lambda n: __import__("torch").ones(n, n).tril()),  # float, not bool
        ),
    ),
    Exercise(
        id="att-3",
        checker=_check_online,
        reference=_reference_online,
        probes=_probes_online,
        compare=compare_close("right on the check's blocks but not on a new state and block: rescale the old l and "
                              "acc by how much the maximum grew.", rtol=1e-4, atol=1e-5),
        wrong=(_no_rescale, _inverted_rescale, _unstable),
    ),
)
