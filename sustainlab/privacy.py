"""Privacy, measured: what encryption, anonymisation, differential privacy and federated learning each protect (chapter 6).

Taught in ``notebooks/06_privacy.ipynb``. Each technique is built from scratch, attacked, and costed:

Encryption (protects data at rest and in transit, not from the model)
    :func:`fernet_encrypt_rows`, :func:`fernet_decrypt_rows`, :func:`ciphertext_features`
Membership inference (Yeom et al., 2018: is this record in the training set?)
    :func:`per_sample_losses`, :func:`loss_threshold_attack` → :class:`MembershipAttack`
Anonymisation (Sweeney, 2002)
    :func:`equivalence_class_sizes`, :func:`k_anonymity`, :func:`generalise`, :func:`suppress_rare`,
    :func:`anonymise` → :class:`Release`, :func:`linkage_attack` → :class:`LinkageResult`, :func:`release_utility`,
    :data:`ARRESTS_QUASI_IDENTIFIERS`, :data:`ARRESTS_LADDER`
Differential privacy with DP-SGD (Abadi et al., 2016)
    :func:`per_sample_gradients` (``torch.func`` ``vmap``/``grad``), :func:`clip_per_sample`, :class:`DPSGD` (the
    ``torch.optim`` API), :func:`poisson_batches`, :func:`train_private`, :func:`epsilon_spent`,
    :func:`calibrate_noise` (the last two use Opacus's RDP accountant: the clipping and noising are the lesson)
Federated averaging (McMahan et al., 2017)
    :func:`split_clients` (IID or label-skewed), :func:`average_states`, :func:`federated_averaging` →
    :class:`FederatedHistory`, :func:`model_bytes`
Shared
    :func:`accuracy`, :func:`check_delta`

The DP-SGD step is checked against Opacus (``tests/test_privacy.py``): every clipped per-sample norm is ≤ C, the
update with the noise off equals Opacus's, the noise's standard deviation is σ·C/B, and ε equals the ε that Opacus's
``PrivacyEngine`` reports for the same run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .optim import SGD, make_loader, train
from .validation import check_same_length, check_scalar

__all__ = [
    # encryption
    "fernet_encrypt_rows",
    "fernet_decrypt_rows",
    "ciphertext_features",
    # membership inference
    "per_sample_losses",
    "MembershipAttack",
    "loss_threshold_attack",
    # anonymisation
    "ARRESTS_QUASI_IDENTIFIERS",
    "ARRESTS_LADDER",
    "equivalence_class_sizes",
    "k_anonymity",
    "generalise",
    "suppress_rare",
    "Release",
    "anonymise",
    "LinkageResult",
    "linkage_attack",
    "release_utility",
    # DP-SGD
    "per_sample_gradients",
    "clip_per_sample",
    "DPSGD",
    "poisson_batches",
    "train_private",
    "check_delta",
    "epsilon_spent",
    "calibrate_noise",
    # federated learning
    "split_clients",
    "average_states",
    "model_bytes",
    "FederatedHistory",
    "federated_averaging",
    # shared
    "accuracy",
]


# --------------------------------------------------------------------------------------------------------------------
# Encryption: a working version of the source's example, and why it is not private learning
# --------------------------------------------------------------------------------------------------------------------


def fernet_encrypt_rows(X, key: bytes | None = None, *, at_time: int | None = None) -> tuple[list[bytes], bytes]:
    """Encrypt each row of a numeric table with Fernet (AES-128-CBC + HMAC-SHA256), bytes in and bytes out.

    Each row's float64 values (little-endian) are one message. Fernet draws a fresh random IV per message, so the
    same row encrypts differently every time: that randomness is what makes ciphertext useless as features.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    key : bytes, optional
        A key from ``cryptography.fernet.Fernet.generate_key()``; a new one is generated when omitted.
    at_time : int, optional
        Unix time written into every token (Fernet stores it in clear). Fixing it keeps the timestamp from leaking
        the order in which rows were encrypted.

    Returns
    -------
    tokens : list of bytes
        One URL-safe base64 token per row.
    key : bytes
        Whoever holds it can decrypt everything: encryption moves the secret, it does not remove it.

    Raises
    ------
    ValueError
        ``X`` is not 2-D numeric or holds NaN/inf.

    Examples
    --------
    >>> tokens, key = fernet_encrypt_rows([[1.0, 2.0]])
    >>> fernet_decrypt_rows(tokens, key, n_features=2).tolist()
    [[1.0, 2.0]]
    """
    from cryptography.fernet import Fernet

    X = _check_table(X, "X")
    if key is None:
        key = Fernet.generate_key()
    fernet = Fernet(key)
    rows = X.astype("<f8")
    if at_time is None:
        return [fernet.encrypt(row.tobytes()) for row in rows], key
    at_time = check_scalar(at_time, "at_time", min_value=0, integer=True)
    return [fernet.encrypt_at_time(row.tobytes(), at_time) for row in rows], key


def fernet_decrypt_rows(tokens: Sequence[bytes], key: bytes, *, n_features: int) -> np.ndarray:
    """Decrypt tokens from :func:`fernet_encrypt_rows` back into the exact float64 table.

    Raises
    ------
    ValueError
        No tokens, or a token decrypts to a message that is not ``n_features`` float64 values.
    cryptography.fernet.InvalidToken
        Wrong key, or a token was altered (Fernet authenticates as well as encrypts).
    """
    from cryptography.fernet import Fernet

    n_features = check_scalar(n_features, "n_features", min_value=1, integer=True)
    if len(tokens) == 0:
        raise ValueError("tokens is empty: there is nothing to decrypt.")
    fernet = Fernet(key)
    rows = []
    for i, token in enumerate(tokens):
        message = fernet.decrypt(token)
        if len(message) != 8 * n_features:
            raise ValueError(f"token {i} holds {len(message)} bytes, not {n_features} float64 values.")
        rows.append(np.frombuffer(message, dtype="<f8"))
    return np.vstack(rows)


def ciphertext_features(tokens: Sequence[bytes]) -> np.ndarray:
    """The source's mistake, reproduced: read each token's bytes as numbers and call them features.

    Returns a float array of shape (n_tokens, token_length), one column per byte of the base64 token (the version
    byte, the timestamp, the random IV, the ciphertext and the HMAC). A model fitted on it learns nothing about the
    data, because without the key these bytes are indistinguishable from random ones.

    Raises
    ------
    ValueError
        No tokens, or tokens of different lengths (rows whose plaintexts differ in size).
    """
    if len(tokens) == 0:
        raise ValueError("tokens is empty.")
    lengths = {len(t) for t in tokens}
    if len(lengths) != 1:
        raise ValueError(f"tokens have different lengths {sorted(lengths)}; encrypt rows of the same width.")
    return np.array([np.frombuffer(t, dtype=np.uint8) for t in tokens], dtype=float)


# --------------------------------------------------------------------------------------------------------------------
# Membership inference: the loss-threshold attack
# --------------------------------------------------------------------------------------------------------------------


def accuracy(model, X, y, *, batch_size: int = 4096) -> float:
    """Share of ``X``'s rows whose arg-max prediction equals ``y`` (model in eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                out = model(X[start:start + batch_size].to(device))
                correct += int((out.argmax(dim=1).cpu() == y[start:start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(X)


def per_sample_losses(model, X, y, *, loss_fn: Callable | None = None) -> np.ndarray:
    """Cross-entropy (or ``loss_fn`` with ``reduction="none"``) of every sample: what the attacker observes.

    Parameters
    ----------
    model : torch.nn.Module
    X : tensor of shape (n, ...)
    y : tensor of shape (n,)
    loss_fn : callable, optional
        ``loss_fn(outputs, targets, reduction="none")``; default ``torch.nn.functional.cross_entropy``.

    Returns
    -------
    numpy.ndarray of shape (n,)
    """
    loss_fn = torch.nn.functional.cross_entropy if loss_fn is None else loss_fn
    check_same_length(X=X, y=y)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            losses = loss_fn(model(X), y, reduction="none")
    finally:
        model.train(was_training)
    return losses.detach().cpu().numpy().astype(float)


@dataclass(frozen=True)
class MembershipAttack:
    """Result of :func:`loss_threshold_attack`.

    Attributes
    ----------
    auc : float
        Area under the ROC curve of "member" scores (−loss): 0.5 is guessing, 1.0 a perfect attack.
    advantage : float
        Best membership advantage over all thresholds, max(TPR − FPR) (Yeom et al.'s measure; 0 = no leakage).
    threshold : float
        Yeom et al.'s threshold: the mean loss on the members (the attacker's estimate of the training loss).
    threshold_advantage : float
        TPR − FPR when predicting "member" for every loss ≤ ``threshold``.
    n_members, n_nonmembers : int
    """

    auc: float
    advantage: float
    threshold: float
    threshold_advantage: float
    n_members: int
    n_nonmembers: int


def loss_threshold_attack(member_losses, nonmember_losses) -> MembershipAttack:
    """Yeom et al.'s (2018) membership inference: a low loss on a record suggests the model trained on it.

    Parameters
    ----------
    member_losses : array-like of shape (n_members,)
        Per-sample losses of records that were in the training set.
    nonmember_losses : array-like of shape (n_nonmembers,)
        Per-sample losses of records from the same distribution that were not.

    Returns
    -------
    MembershipAttack

    Raises
    ------
    ValueError
        Either array is empty, not 1-D, or holds NaN/inf.

    Examples
    --------
    >>> attack = loss_threshold_attack([0.1, 0.2, 0.3], [0.25, 0.9, 1.2])
    >>> round(attack.auc, 3), round(attack.advantage, 3)
    (0.889, 0.667)
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    members = _check_vector(member_losses, "member_losses")
    nonmembers = _check_vector(nonmember_losses, "nonmember_losses")
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    scores = -np.r_[members, nonmembers]
    auc = float(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores)
    threshold = float(members.mean())
    threshold_advantage = float(np.mean(members <= threshold) - np.mean(nonmembers <= threshold))
    return MembershipAttack(auc, float(np.max(tpr - fpr)), threshold, threshold_advantage, len(members),
                            len(nonmembers))


# --------------------------------------------------------------------------------------------------------------------
# Anonymisation: k-anonymity, generalisation, suppression and the linkage attack
# --------------------------------------------------------------------------------------------------------------------

#: What an attacker can know about a person from other sources (a register, social media, a news story).
ARRESTS_QUASI_IDENTIFIERS = ("year", "age", "sex", "colour", "employed", "citizen")

#: Generalisation levels for the arrests data, from none to coarse: each is the keyword arguments of
#: :func:`generalise` (``bins``: numeric column → bin width; ``suppress``: columns replaced by ``"*"``).
ARRESTS_LADDER: tuple[dict, ...] = (
    {},
    {"bins": {"age": 5}},
    {"bins": {"age": 10, "year": 2}},
    {"bins": {"age": 10}, "suppress": ("year",)},
    {"bins": {"age": 20}, "suppress": ("year",)},
    {"bins": {"age": 20}, "suppress": ("year", "employed")},
    {"bins": {"age": 20}, "suppress": ("year", "employed", "citizen")},
    {"suppress": ("year", "age", "employed", "citizen")},
)


def _check_frame(df, quasi_identifiers) -> list[str]:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
    if isinstance(quasi_identifiers, str):
        quasi_identifiers = [quasi_identifiers]
    quasi_identifiers = list(quasi_identifiers)
    if not quasi_identifiers:
        raise ValueError("quasi_identifiers is empty: name the columns an attacker could know.")
    missing = [c for c in quasi_identifiers if c not in df.columns]
    if missing:
        raise ValueError(f"quasi_identifiers {missing} are not columns of the frame; its columns are "
                         f"{list(df.columns)}.")
    if len(df) == 0:
        raise ValueError("df has no rows.")
    return quasi_identifiers


def equivalence_class_sizes(df: pd.DataFrame, quasi_identifiers) -> pd.Series:
    """For every row, how many rows share its quasi-identifier values (its *equivalence class*), aligned with ``df``.

    Missing values form a class of their own (an attacker can match "unknown" too).
    """
    qis = _check_frame(df, quasi_identifiers)
    return df.groupby(qis, dropna=False, observed=True)[qis[0]].transform("size").astype(int)


def k_anonymity(df: pd.DataFrame, quasi_identifiers) -> int:
    """The k for which ``df`` is k-anonymous: the size of its smallest equivalence class (Sweeney, 2002).

    k = 1 means at least one person is unique on the quasi-identifiers, so anyone who knows those values about them
    finds their row.

    Raises
    ------
    ValueError
        A quasi-identifier is not a column, the list is empty, or the frame has no rows.
    TypeError
        ``df`` is not a DataFrame.

    Examples
    --------
    >>> df = pd.DataFrame({"age": [30, 30, 41], "sex": ["F", "F", "M"]})
    >>> k_anonymity(df, ["age", "sex"])
    1
    >>> k_anonymity(df.iloc[:2], ["age", "sex"])
    2
    """
    return int(equivalence_class_sizes(df, quasi_identifiers).min())


def generalise(df: pd.DataFrame, *, bins: Mapping[str, int] | None = None, suppress: Sequence[str] = ()) -> pd.DataFrame:
    """A copy of ``df`` with numeric columns coarsened into intervals and whole columns suppressed.

    Parameters
    ----------
    bins : dict of {column: width}, optional
        ``age`` with width 10 becomes labels such as ``"30-39"`` (intervals start at multiples of the width).
    suppress : sequence of str
        Columns replaced by ``"*"`` (the value is withheld).

    Raises
    ------
    ValueError
        A named column is missing, a bin width is not a positive integer, or a binned column is not numeric.

    Examples
    --------
    >>> generalise(pd.DataFrame({"age": [23, 37], "sex": ["F", "M"]}), bins={"age": 10}, suppress=["sex"]).values.tolist()
    [['20-29', '*'], ['30-39', '*']]
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
    bins = dict(bins or {})
    suppress = [suppress] if isinstance(suppress, str) else list(suppress)
    missing = [c for c in [*bins, *suppress] if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the frame; its columns are {list(df.columns)}.")
    out = df.copy()
    for column, width in bins.items():
        width = check_scalar(width, f"bins[{column!r}]", min_value=1, integer=True)
        if not pd.api.types.is_numeric_dtype(out[column]):
            raise ValueError(f"column {column!r} is not numeric and cannot be binned; suppress it instead.")
        low = (out[column] // width * width).astype(int)
        out[column] = low.astype(str) + "-" + (low + width - 1).astype(str) if width > 1 else low.astype(str)
    for column in suppress:
        out[column] = "*"
    return out


def suppress_rare(df: pd.DataFrame, quasi_identifiers, k: int) -> tuple[pd.DataFrame, int]:
    """Drop the rows whose equivalence class has fewer than ``k`` rows; returns ``(kept, n_suppressed)``.

    Raises
    ------
    ValueError
        ``k < 1``, or the quasi-identifiers are not columns.
    """
    k = check_scalar(k, "k", min_value=1, integer=True)
    sizes = equivalence_class_sizes(df, quasi_identifiers)
    keep = sizes >= k
    return df[keep], int((~keep).sum())


@dataclass
class Release:
    """A k-anonymous release made by :func:`anonymise`.

    Attributes
    ----------
    frame : DataFrame
        The released rows, generalised, rare classes suppressed.
    level : int
        Index of the ladder level used.
    generalisation : dict
        That level's :func:`generalise` arguments (an attacker who reads the release knows them too).
    n_suppressed : int
        Rows withheld.
    k : int
        The k that was asked for (the release's :func:`k_anonymity` is at least this).
    """

    frame: pd.DataFrame
    level: int
    generalisation: dict
    n_suppressed: int
    k: int

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        """Generalise other rows (an attacker's register, a test set) exactly as this release was."""
        return generalise(df, **self.generalisation)


def anonymise(df: pd.DataFrame, quasi_identifiers, k: int, *, ladder: Sequence[dict] = ARRESTS_LADDER,
              max_suppression: float = 0.05) -> Release:
    """Make ``df`` k-anonymous: the first (least general) ladder level at which suppressing rare classes withholds
    at most ``max_suppression`` of the rows.

    Parameters
    ----------
    df : DataFrame
    quasi_identifiers : sequence of str
    k : int ≥ 1
    ladder : sequence of dict
        :func:`generalise` arguments, from least to most general; default :data:`ARRESTS_LADDER`.
    max_suppression : float in [0, 1]
        Largest share of rows that may be withheld. The last level is used, with whatever suppression it needs, when
        no level meets it.

    Returns
    -------
    Release

    Raises
    ------
    ValueError
        ``k < 1``, a quasi-identifier missing from ``df``, an empty ladder, ``max_suppression`` outside [0, 1].
    """
    qis = _check_frame(df, quasi_identifiers)
    k = check_scalar(k, "k", min_value=1, integer=True)
    max_suppression = check_scalar(max_suppression, "max_suppression", min_value=0, max_value=1)
    if len(ladder) == 0:
        raise ValueError("ladder is empty: give at least one generalisation level (e.g. {} for none).")
    for level, generalisation in enumerate(ladder):
        frame = generalise(df, **generalisation)
        kept, n_suppressed = suppress_rare(frame, qis, k)
        if n_suppressed <= max_suppression * len(df) or level == len(ladder) - 1:
            return Release(kept, level, dict(generalisation), n_suppressed, k)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class LinkageResult:
    """What a linkage attack learned about the people in the attacker's register.

    Attributes
    ----------
    reidentified : float
        Share of people whose quasi-identifiers match exactly one released row: their row, found.
    mean_risk : float
        Mean over people of 1 / (number of matching rows), 0 when none match: the chance that an attacker who picks
        one matching row at random picks the right one (the "prosecutor" risk).
    disclosed : float or None
        Share of people all of whose matching rows have the same ``sensitive`` value: the attacker learns it without
        knowing which row is theirs (the homogeneity attack that k-anonymity does not stop). ``None`` without
        ``sensitive``.
    n_people : int
    """

    reidentified: float
    mean_risk: float
    disclosed: float | None
    n_people: int


def linkage_attack(release: pd.DataFrame, register: pd.DataFrame, quasi_identifiers, *,
                   sensitive: str | None = None) -> LinkageResult:
    """Join an attacker's register of named people to a release on the quasi-identifiers (Sweeney's linkage attack).

    Parameters
    ----------
    release : DataFrame
        The published rows (generalised as published).
    register : DataFrame
        The attacker's side information: one row per person, with their quasi-identifiers generalised the way the
        release was (:meth:`Release.apply`). The course's attacker knows everyone in the data set, the worst case.
    quasi_identifiers : sequence of str
        Columns in both frames.
    sensitive : str, optional
        A column of ``release`` the attacker wants to learn (e.g. ``"released"``).

    Returns
    -------
    LinkageResult

    Raises
    ------
    ValueError
        A quasi-identifier or ``sensitive`` is missing, or a frame is empty.
    """
    qis = _check_frame(register, quasi_identifiers)
    _check_frame(release, qis)
    if sensitive is not None and sensitive not in release.columns:
        raise ValueError(f"sensitive={sensitive!r} is not a column of the release.")
    keys = release.groupby(qis, dropna=False, observed=True)
    stats = keys.size().rename("matches").to_frame()
    if sensitive is not None:
        stats["homogeneous"] = keys[sensitive].nunique(dropna=False) == 1
    merged = register[qis].merge(stats.reset_index(), on=qis, how="left")
    matches = merged["matches"].fillna(0).to_numpy()
    risk = np.divide(1.0, matches, out=np.zeros_like(matches, dtype=float), where=matches > 0)
    disclosed = None
    if sensitive is not None:
        disclosed = float(merged["homogeneous"].eq(True).mean())
    return LinkageResult(float(np.mean(matches == 1)), float(risk.mean()), disclosed, len(register))


def release_utility(train_frame: pd.DataFrame, test_frame: pd.DataFrame, *, features: Sequence[str],
                    target: str) -> float:
    """Balanced accuracy, on ``test_frame``, of a class-weighted logistic regression fitted on ``train_frame``.

    Every feature is one-hot encoded as a category (a generalised age such as ``"20-29"`` is a category), with the
    categories of both frames, so that the model sees what a data user of the release would see.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    features = list(features)
    _check_frame(train_frame, [*features, target])
    _check_frame(test_frame, [*features, target])
    both = pd.concat([train_frame[features], test_frame[features]], keys=["train", "test"]).astype(str)
    encoded = pd.get_dummies(both, dtype=float)
    model = LogisticRegression(class_weight="balanced", max_iter=1000)
    model.fit(encoded.loc["train"], train_frame[target])
    return float(balanced_accuracy_score(test_frame[target], model.predict(encoded.loc["test"])))


# --------------------------------------------------------------------------------------------------------------------
# DP-SGD from scratch
# --------------------------------------------------------------------------------------------------------------------


def per_sample_gradients(model, X, y, *, loss_fn: Callable | None = None) -> dict[str, torch.Tensor]:
    """The gradient of the loss of *each* sample, for every trainable parameter, with ``torch.func``.

    ``grad`` differentiates the loss of one sample with respect to the parameters; ``vmap`` maps that function over
    the batch, so one call gives a tensor of shape (batch, *parameter shape) per parameter, without a Python loop.

    Parameters
    ----------
    model : torch.nn.Module
        Without batch-dependent layers (batch norm); the model is called on one sample at a time.
    X : tensor of shape (batch, ...)
    y : tensor of shape (batch,)
    loss_fn : callable, optional
        ``loss_fn(outputs, targets)`` returning the mean loss; default cross-entropy.

    Returns
    -------
    dict of {parameter name: tensor of shape (batch, *parameter.shape)}

    Raises
    ------
    ValueError
        ``X`` and ``y`` have different lengths.
    """
    from torch.func import functional_call, grad, vmap

    loss_fn = torch.nn.functional.cross_entropy if loss_fn is None else loss_fn
    check_same_length(X=X, y=y)
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss_of_one(params, x, target):
        out = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return loss_fn(out, target.unsqueeze(0))

    if len(X) == 0:
        return {name: p.new_zeros((0, *p.shape)) for name, p in params.items()}
    return vmap(grad(loss_of_one), in_dims=(None, 0, 0), randomness="different")(params, X, y)


def clip_per_sample(grads, max_norm: float, *, eps: float = 1e-6):
    """Scale each sample's gradient so that its norm over *all* parameters is at most ``max_norm`` ("flat" clipping).

    The factor is min(1, C / (‖gᵢ‖ + eps)), with Opacus's ``eps = 1e-6`` so that the two agree exactly and a zero
    gradient does not divide by zero.

    Parameters
    ----------
    grads : dict of {name: tensor of shape (batch, ...)} or sequence of such tensors
        Per-sample gradients, e.g. from :func:`per_sample_gradients`.
    max_norm : float > 0
        The clipping norm C.

    Returns
    -------
    clipped : same type as ``grads``
    norms : tensor of shape (batch,)
        The per-sample norms *before* clipping.

    Raises
    ------
    ValueError
        ``max_norm ≤ 0``, no gradients, or tensors whose batch sizes differ.
    """
    max_norm = check_scalar(max_norm, "max_norm", min_value=0, include_min=False)
    is_dict = isinstance(grads, Mapping)
    tensors = list(grads.values()) if is_dict else list(grads)
    if not tensors:
        raise ValueError("grads is empty: pass one per-sample gradient tensor per parameter.")
    batch = {t.shape[0] for t in tensors}
    if len(batch) != 1:
        raise ValueError(f"per-sample gradients have different batch sizes {sorted(batch)}.")
    norms = torch.stack([t.reshape(t.shape[0], -1).norm(2, dim=1) for t in tensors], dim=1).norm(2, dim=1)
    factor = (max_norm / (norms + eps)).clamp(max=1.0)
    clipped = [t * factor.reshape(-1, *([1] * (t.ndim - 1))) for t in tensors]
    if is_dict:
        return dict(zip(grads.keys(), clipped)), norms
    return clipped, norms


class DPSGD(SGD):
    """Differentially private SGD (Abadi et al., 2016): clip each sample's gradient, add Gaussian noise, average.

    The ``torch.optim`` API of :class:`sustainlab.optim.SGD` (which does the final update, momentum included), with
    one difference: :meth:`step` reads the *per-sample* gradients from ``p.grad_sample`` (shape (batch, *p.shape),
    Opacus's convention; :func:`per_sample_gradients` computes them) instead of ``p.grad``. For a batch B::

        gᵢ ← gᵢ · min(1, C / (‖gᵢ‖ + 1e-6))              clip every sample to norm C (over all parameters)
        g  ← (Σᵢ gᵢ + N(0, σ²C² I)) / expected_batch_size  noise with std σ·C on the sum, then average
        θ  ← SGD update with g

    Dividing by the *expected* batch size (not the drawn one) is what the privacy analysis of Poisson sampling
    assumes, and what Opacus does.

    Parameters
    ----------
    params : iterable of parameters or parameter groups
    lr : float
    noise_multiplier : float ≥ 0
        σ: the noise std in units of C. 0 gives clipping without privacy.
    max_grad_norm : float > 0
        C, the clipping norm.
    expected_batch_size : int ≥ 1
        sample_rate × dataset size.
    generator : torch.Generator, optional
        Seeds the noise (reproducible runs; use a secure generator for real deployments).
    momentum, weight_decay : float
        As in :class:`sustainlab.optim.SGD`.

    Raises
    ------
    ValueError
        ``max_grad_norm ≤ 0``, ``noise_multiplier < 0``, ``expected_batch_size < 1``, or a bad ``lr``.
    RuntimeError
        :meth:`step` is called while a trainable parameter has no ``grad_sample``.

    Examples
    --------
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = DPSGD(model.parameters(), lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4)
    >>> X, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    >>> for name, g in per_sample_gradients(model, X, y).items():
    ...     model.get_parameter(name).grad_sample = g
    >>> opt.step(); opt.zero_grad()
    >>> opt.last_norms.shape
    torch.Size([4])
    """

    def __init__(self, params, lr: float, *, noise_multiplier: float, max_grad_norm: float,
                 expected_batch_size: int, generator: torch.Generator | None = None, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.noise_multiplier = check_scalar(noise_multiplier, "noise_multiplier", min_value=0)
        self.max_grad_norm = check_scalar(max_grad_norm, "max_grad_norm", min_value=0, include_min=False)
        self.expected_batch_size = check_scalar(expected_batch_size, "expected_batch_size", min_value=1,
                                                integer=True)
        self.generator = generator
        #: The per-sample norms before clipping, at the last step (for plots and tests).
        self.last_norms: torch.Tensor | None = None

    def _params(self) -> list:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    @torch.no_grad()
    def privatise(self) -> None:
        """Turn every ``p.grad_sample`` into the clipped, noised, averaged ``p.grad`` (the DP part of :meth:`step`)."""
        params = self._params()
        missing = [i for i, p in enumerate(params) if getattr(p, "grad_sample", None) is None]
        if missing:
            raise RuntimeError(
                f"{len(missing)} parameter(s) have no grad_sample: compute per-sample gradients first "
                "(per_sample_gradients, then p.grad_sample = ...), or use train_private."
            )
        clipped, self.last_norms = clip_per_sample([p.grad_sample for p in params], self.max_grad_norm)
        std = self.noise_multiplier * self.max_grad_norm
        for p, g in zip(params, clipped):
            summed = g.sum(dim=0)
            if std > 0:
                summed = summed + std * torch.randn(summed.shape, generator=self.generator, dtype=summed.dtype,
                                                    device=summed.device)
            p.grad = summed / self.expected_batch_size

    def step(self, closure: Callable | None = None):
        """Privatise the per-sample gradients, then take the SGD step; returns ``closure()``'s loss if given."""
        self.privatise()
        return super().step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear ``p.grad`` and ``p.grad_sample``."""
        super().zero_grad(set_to_none=set_to_none)
        for p in self._params():
            p.grad_sample = None


def poisson_batches(n_samples: int, sample_rate: float, n_steps: int, *, generator: torch.Generator | None = None):
    """Yield ``n_steps`` index tensors, each sample included independently with probability ``sample_rate``.

    Poisson sampling is what the privacy accountant assumes; batch sizes vary (and can be 0).

    Raises
    ------
    ValueError
        ``sample_rate`` outside (0, 1], or a bad ``n_samples``/``n_steps``.
    """
    n_samples = check_scalar(n_samples, "n_samples", min_value=1, integer=True)
    sample_rate = _check_sample_rate(sample_rate)
    n_steps = check_scalar(n_steps, "n_steps", min_value=0, integer=True)
    for _ in range(n_steps):
        yield torch.nonzero(torch.rand(n_samples, generator=generator) < sample_rate).flatten()


def train_private(model, X, y, *, epochs: int, sample_rate: float, lr: float, noise_multiplier: float,
                  max_grad_norm: float, seed: int = 0, loss_fn: Callable | None = None, momentum: float = 0.0):
    """Train ``model`` with :class:`DPSGD` on Poisson-sampled batches; returns the optimizer (its ``steps`` counted).

    ``epochs`` × round(1 / ``sample_rate``) steps, each on a batch drawn by :func:`poisson_batches` with a generator
    seeded by ``seed`` (which also seeds the noise). Per-sample gradients come from :func:`per_sample_gradients`.
    Pair with :func:`epsilon_spent` ``(noise_multiplier, sample_rate, optimizer.steps, delta)``.

    Raises
    ------
    ValueError
        Bad ``epochs``, ``sample_rate`` outside (0, 1], ``max_grad_norm ≤ 0``, ``noise_multiplier < 0``.
    """
    epochs = check_scalar(epochs, "epochs", min_value=1, integer=True)
    sample_rate = _check_sample_rate(sample_rate)
    check_same_length(X=X, y=y)
    generator = torch.Generator().manual_seed(seed)
    optimizer = DPSGD(model.parameters(), lr=lr, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                      expected_batch_size=max(1, round(sample_rate * len(X))), generator=generator,
                      momentum=momentum)
    n_steps = epochs * max(1, round(1 / sample_rate))
    model.train()
    for batch in poisson_batches(len(X), sample_rate, n_steps, generator=generator):
        for name, g in per_sample_gradients(model, X[batch], y[batch], loss_fn=loss_fn).items():
            model.get_parameter(name).grad_sample = g
        optimizer.step()
        optimizer.zero_grad()
    optimizer.steps = n_steps
    return optimizer


def _check_sample_rate(sample_rate) -> float:
    return check_scalar(sample_rate, "sample_rate", min_value=0, max_value=1, include_min=False)


def check_delta(delta, n_samples: int | None = None) -> float:
    """Check δ: in (0, 1), and below 1/N when the data set size N is known.

    δ is the probability that the ε guarantee fails outright. With δ ≥ 1/N a mechanism that publishes one random
    person's record in full satisfies (ε, δ)-DP for every ε, so such a δ promises nothing.
    """
    delta = check_scalar(delta, "delta", min_value=0, max_value=1, include_min=False, include_max=False)
    if n_samples is not None:
        n_samples = check_scalar(n_samples, "n_samples", min_value=1, integer=True)
        if delta >= 1 / n_samples:
            raise ValueError(f"delta must be < 1/N = {1 / n_samples:.3g} for N = {n_samples} samples, got {delta:g}: "
                             "with delta >= 1/N, leaking one whole record would still count as private.")
    return delta


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float, *,
                  n_samples: int | None = None) -> float:
    """The ε that ``steps`` DP-SGD steps with noise σ and Poisson rate q spend at δ (Opacus's RDP accountant).

    Returns ``inf`` for σ = 0 (no noise, no privacy) and 0 for no steps.

    Raises
    ------
    ValueError
        ``noise_multiplier < 0``, ``sample_rate`` outside (0, 1], ``steps < 0``, δ outside (0, 1) or ≥ 1/N.

    Examples
    --------
    >>> round(epsilon_spent(1.0, 0.01, 1000, 1e-5), 2)
    2.1
    """
    from opacus.accountants import RDPAccountant

    noise_multiplier = check_scalar(noise_multiplier, "noise_multiplier", min_value=0)
    sample_rate = _check_sample_rate(sample_rate)
    steps = check_scalar(steps, "steps", min_value=0, integer=True)
    delta = check_delta(delta, n_samples)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta))


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, *,
                    n_samples: int | None = None) -> float:
    """The noise multiplier σ that spends ``target_epsilon`` (within 0.01) over ``steps`` steps; 0 for ε = ∞.

    Raises
    ------
    ValueError
        ``target_epsilon ≤ 0`` or the other arguments as in :func:`epsilon_spent`.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if target_epsilon == math.inf:
        return 0.0
    target_epsilon = check_scalar(target_epsilon, "target_epsilon", min_value=0, include_min=False)
    sample_rate = _check_sample_rate(sample_rate)
    steps = check_scalar(steps, "steps", min_value=1, integer=True)
    delta = check_delta(delta, n_samples)
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant="rdp", epsilon_tolerance=0.01))


# --------------------------------------------------------------------------------------------------------------------
# Federated averaging
# --------------------------------------------------------------------------------------------------------------------


def split_clients(y, n_clients: int, *, iid: bool = True, shards_per_client: int = 2, seed: int = 0) -> list:
    """Split sample indices among ``n_clients`` simulated clients, IID or label-skewed (McMahan et al., 2017).

    IID: a seeded shuffle cut into near-equal parts. Non-IID: the indices sorted by label are cut into
    ``n_clients × shards_per_client`` shards and each client gets ``shards_per_client`` random shards, so most
    clients see only a couple of classes.

    Returns
    -------
    list of numpy arrays of indices (every index appears exactly once)

    Raises
    ------
    ValueError
        ``n_clients`` < 1 or more clients (or shards) than samples.
    """
    y = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    n_clients = check_scalar(n_clients, "n_clients", min_value=1, integer=True)
    shards_per_client = check_scalar(shards_per_client, "shards_per_client", min_value=1, integer=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    if iid:
        if n_clients > len(y):
            raise ValueError(f"n_clients={n_clients} is more than the {len(y)} samples: a client would be empty.")
        return [np.sort(part) for part in np.array_split(order, n_clients)]
    n_shards = n_clients * shards_per_client
    if n_shards > len(y):
        raise ValueError(f"{n_shards} shards for {len(y)} samples: lower n_clients or shards_per_client.")
    by_label = order[np.argsort(y[order], kind="stable")]
    shards = np.array_split(by_label, n_shards)
    assignment = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in assignment]


def average_states(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict:
    """The weighted average Σₖ wₖ θₖ / Σₖ wₖ of model state dicts: FedAvg's aggregation with wₖ = nₖ samples.

    Raises
    ------
    ValueError
        No states, lengths differ, a weight ≤ 0 (an empty client), or the states have different keys.
    """
    if len(states) == 0:
        raise ValueError("states is empty: at least one client must report a model.")
    check_same_length(states=states, weights=weights)
    weights = [float(w) for w in weights]
    empty = [i for i, w in enumerate(weights) if not w > 0]
    if empty:
        raise ValueError(f"client(s) {empty} have no samples (weight <= 0): an empty client cannot be averaged in; "
                         "drop it from the round.")
    keys = list(states[0])
    for i, state in enumerate(states):
        if list(state) != keys:
            raise ValueError(f"client {i}'s model has different parameters from client 0's.")
    total = sum(weights)
    return {key: sum(w * s[key].detach().double() for w, s in zip(weights, states)).div(total).to(states[0][key].dtype)
            for key in keys}


def model_bytes(model) -> int:
    """Bytes of ``model``'s state (parameters and buffers): what one transfer of the model costs."""
    return int(sum(t.numel() * t.element_size() for t in model.state_dict().values()))


@dataclass
class FederatedHistory:
    """What :func:`federated_averaging` recorded, one entry per round.

    Attributes
    ----------
    accuracy : list of float
        The global model's accuracy on ``eval_data`` after each round (empty without ``eval_data``).
    bytes_per_round : int
        Bytes sent per round: the global model down to each client and its update back up.
    rounds : int
    """

    accuracy: list = field(default_factory=list)
    bytes_per_round: int = 0
    rounds: int = 0

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_round * self.rounds


def federated_averaging(model, clients: Sequence[tuple], *, rounds: int, local_epochs: int = 1, lr: float = 0.1,
                        batch_size: int = 32, eval_data: tuple | None = None, seed: int = 0,
                        device="cpu") -> FederatedHistory:
    """Train ``model`` by federated averaging: each round every client trains a copy locally, the server averages.

    Each client runs ``local_epochs`` of SGD with :func:`sustainlab.optim.train` on its own data (a seeded loader
    from :func:`sustainlab.optim.make_loader`); the server replaces the global weights by the average of the
    clients', weighted by their numbers of samples (:func:`average_states`). No raw data leaves a client, only
    weights, which can still leak information (add DP-SGD locally for a guarantee).

    Parameters
    ----------
    model : torch.nn.Module
        The global model, updated in place.
    clients : sequence of (X, y) tensor pairs
        One per client; none may be empty.
    rounds : int ≥ 1
    local_epochs : int ≥ 1
    lr : float
        Learning rate of the clients' SGD (no momentum, so one client with one full-batch step is plain SGD).
    batch_size : int
    eval_data : (X, y), optional
        Scored with :func:`accuracy` after every round.
    seed : int
        Seeds each client's shuffling (differently per round and client).

    Returns
    -------
    FederatedHistory

    Raises
    ------
    ValueError
        No clients, an empty client, or bad ``rounds``/``local_epochs``/``batch_size``.
    """
    import copy

    if len(clients) == 0:
        raise ValueError("clients is empty: give at least one (X, y) pair.")
    for i, (X, y) in enumerate(clients):
        check_same_length(X=X, y=y)
        if len(X) == 0:
            raise ValueError(f"client {i} is empty (no samples): drop it or give it data.")
    rounds = check_scalar(rounds, "rounds", min_value=1, integer=True)
    local_epochs = check_scalar(local_epochs, "local_epochs", min_value=1, integer=True)
    batch_size = check_scalar(batch_size, "batch_size", min_value=1, integer=True)
    history = FederatedHistory(bytes_per_round=2 * len(clients) * model_bytes(model))
    for round_ in range(rounds):
        states, weights = [], []
        for i, (X, y) in enumerate(clients):
            local = copy.deepcopy(model)
            loader = make_loader(X, y, batch_size, random_state=seed + 1000 * round_ + i)
            train(local, loader, torch.optim.SGD(local.parameters(), lr=lr), local_epochs, device=device,
                  desc=f"round {round_ + 1}, client {i + 1}")
            states.append(local.state_dict())
            weights.append(len(X))
        model.load_state_dict(average_states(states, weights))
        history.rounds += 1
        if eval_data is not None:
            history.accuracy.append(accuracy(model, *eval_data))
    return history


# --------------------------------------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------------------------------------


def _check_table(X, name: str) -> np.ndarray:
    array = np.asarray(X, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return array


def _check_vector(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of losses, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return array
