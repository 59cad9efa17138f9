"""The exercise-check mechanism: an exercise is data (id, reference, checks, known-wrong answers).

Two places use one exercise, through one code path:

- **Self-study** (a learner's notebook): a check cell calls ``check("<id>", answer)``, which prints exactly one
  deterministic line, ``✔ <id> passed`` or ``✘ <id>: <hint>``. The hint says what to look at, never the answer.
- **Grading** (``sustainlab grade``): the same call only *collects evidence*. It runs the student's answer on the
  exercise's inputs and writes what the answer returned (plain JSON data, see :func:`encode`) to the folder named by
  ``SUSTAINLAB_EVIDENCE_DIR``; it decides nothing. The grader process, which never runs student code, turns that
  evidence into a verdict with :func:`judge`, recomputing every expected value itself. Nothing the kernel prints or
  patches can change a verdict: forged evidence only passes if it holds the right answers for the grader's inputs.

An exercise declares up to two kinds of test, both judged in the grader:

``checker(answer)`` (fixed public inputs, specific hints)
    Calls ``answer`` and raises :class:`CheckFailed` with a hint when a result is wrong (helpers: :func:`expect`,
    :func:`expect_close`). It is run twice: in the kernel against the real answer, recording each call's result
    (:class:`_Recorder`), and in the grader against a :class:`_Replay` that hands back those recorded results. The
    checker sees the same plain data both times (the kernel side also gets the decoded copy), so it takes the same
    path and the grader's run is the verdict. A checker must be deterministic (seeded data only).
``probes(rng)`` and ``compare(student, reference, probes)`` (inputs from a seed)
    ``probes`` returns a list of argument tuples drawn from ``rng`` (a ``numpy.random.Generator``). In grading the
    seed is secret and changes with every grading, so an answer tailored to known inputs fails. The kernel records
    ``answer(*probe)`` for each probe; the grader computes ``reference()(*probe)`` on the same probes and calls
    ``compare(student_outputs, reference_outputs, probes)``, which returns a hint, or None when the outputs are right.
    A student output that raised is a :class:`Raised`. :func:`compare_close` is a ready-made ``compare``.

Porting an old-style exercise is nothing to do: ``Exercise(id=..., checker=..., reference=..., wrong=...)`` still
works unchanged, its checker judged by replay. Adding ``probes``/``compare`` adds inputs no student can know. A
*hidden* exercise (``hidden=True``) is a registry exercise like any other, usually probes-only, and names the
notebook variable it checks in ``answer`` (grading writes its check cell as ``check("<id>", <answer>)``); its
``compare`` must say what it actually caught (a sign, a shape, a crash), not a generic sentence.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

__all__ = [
    "PASS_MARK",
    "FAIL_MARK",
    "CheckFailed",
    "Exercise",
    "passed_line",
    "failed_line",
    "report",
    "expect",
    "expect_close",
    "run_check",
    "is_finite_number",
    "EvidenceError",
    "Raised",
    "compare_close",
    "encode",
    "decode",
    "collect",
    "Verdict",
    "judge",
    "write_evidence",
    "unavailable",
    "expect_function",
    "interleaved_times",
    "expect_paired_verdict",
]

#: What an exercise asks for (see :class:`Exercise`).
EXERCISE_KINDS = ("build", "measure", "interpret")
PASS_MARK = "✔"
FAIL_MARK = "✘"
#: Grading sets these in the kernel's environment: where to write evidence, and the probes' seed.
EVIDENCE_ENV = "SUSTAINLAB_EVIDENCE_DIR"
SEED_ENV = "SUSTAINLAB_GRADING_SEED"
#: The probes' seed outside grading (self-study): fixed, so a check cell's output is deterministic.
PUBLIC_SEED = 0
EVIDENCE_FORMAT = 1
#: Caps on what evidence may hold (the grader refuses larger files before decoding them).
MAX_EVIDENCE_BYTES = 8 * 2**20
MAX_ELEMENTS = 2_000_000
MAX_CALLS = 10_000
_NUMERIC_DTYPES = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64".split())


class CheckFailed(Exception):
    """Raised by a checker with a hint a learner can act on."""


class EvidenceError(Exception):
    """Evidence that is malformed, incomplete or inconsistent: the check is scored ``error``, never ``passed``."""


@dataclass(frozen=True)
class Raised:
    """A probe on which the student's answer raised: ``kind`` is the exception's type name."""

    kind: str
    message: str = ""

    def describe(self) -> str:
        if self.kind == "NotImplementedError":
            return "not implemented yet: replace `raise NotImplementedError()` with your code."
        return f"your code raised {self.kind}" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True)
class Exercise:
    """One graded exercise.

    Parameters
    ----------
    id : str
        ``"<chapter>-<n>"`` (hidden checks: ``"<chapter>-<n>-hidden"``); the same id is in the check cell's metadata.
    checker : callable, optional
        ``checker(answer)`` returns nothing when the answer is right and raises :class:`CheckFailed` with a hint
        otherwise. Deterministic: it is replayed in the grader on the recorded results.
    reference : callable
        Returns a known-good answer. ``tests/test_checks.py`` asserts it passes, so no check is impossible; the
        grader runs it on the probes.
    wrong : tuple of callables
        Each returns a known-bad answer. The test asserts each fails, so no check is vacuous.
    probes : callable, optional
        ``probes(rng) -> list of argument tuples`` for the answer, drawn from a ``numpy.random.Generator``.
    compare : callable, optional
        ``compare(student_outputs, reference_outputs, probes) -> hint or None`` (required with ``probes``).
    hidden : bool
        A hidden check: absent from the student copy, inserted when grading.
    answer : str, optional
        The notebook variable the check cell passes (e.g. ``"gd_step"``); grading writes a hidden check's cell from it.
    kind : {"build", "measure", "interpret"}
        What the exercise asks for (issue 16): *build* a function from scratch, *measure* something with the repeats
        helper and return the figure, or *interpret*: choose a configuration, criterion or threshold that meets a
        stated goal. The notebook's heading names it: ``### Exercise <id> (<kind>, <n> points)``.
    """

    id: str
    checker: Callable[[Any], None] | None = None
    reference: Callable[[], Any] | None = None
    wrong: tuple[Callable[[], Any], ...] = field(default_factory=tuple)
    probes: Callable[[Any], Sequence[tuple]] | None = None
    compare: Callable[[list, list, list], str | None] | None = None
    hidden: bool = False
    answer: str | None = None
    kind: str = "build"

    def __post_init__(self):
        if self.kind not in EXERCISE_KINDS:
            raise ValueError(f"exercise {self.id!r}: kind must be one of {EXERCISE_KINDS}, got {self.kind!r}.")
        if self.reference is None:
            raise ValueError(f"exercise {self.id!r}: reference is required.")
        if self.checker is None and self.probes is None:
            raise ValueError(f"exercise {self.id!r}: give a checker, probes, or both.")
        if (self.probes is None) != (self.compare is None):
            raise ValueError(f"exercise {self.id!r}: probes and compare go together.")


def passed_line(exercise_id: str) -> str:
    """The line a passing check prints (what the instructor notebook stores)."""
    return f"{PASS_MARK} {exercise_id} passed"


def failed_line(exercise_id: str, hint: str) -> str:
    """The line a failing check prints."""
    return f"{FAIL_MARK} {exercise_id}: {hint}"


def report(exercise_id: str, passed: bool, hint: str = "not quite right yet.") -> None:
    """Print the standard one-line verdict (self-study only: the grader scores registry exercises, not this line)."""
    print(passed_line(exercise_id) if passed else failed_line(exercise_id, hint))


def expect(condition: bool, hint: str) -> None:
    """Inside a checker: fail with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(hint)


def expect_function(answer, exercise_id: str, name: str) -> None:
    """Inside a checker: fail unless the learner passed a function (not the result of calling it)."""
    expect(callable(answer), f'pass your function itself, e.g. check("{exercise_id}", {name}), not its result.')


def interleaved_times(got, keys, repeats: int, fields, *, item: str = "configuration"):
    """Inside a checker of a *measure* exercise: validate what the answer reports of its runs; return their times.

    ``got`` must be a dict with ``"seconds"`` and ``"results"`` (each ``{key: [one value per round]}``) and the
    exercise's own ``fields``. The checker's workloads return increasing sequence numbers, so ``"results"`` shows
    the order the runs happened in: every key must run once in a round before any run of the next. Returns the
    seconds as an array of shape ``(repeats, len(keys))``, validated positive and finite.
    """
    import numpy as np

    names = ["seconds", "results", *fields]
    expect(isinstance(got, dict), f"return a dict with keys {', '.join(repr(n) for n in names)}, got "
                                  f"{type(got).__name__}.")
    missing = set(names) - set(got)
    expect(not missing, f"the dict lacks {sorted(missing)}.")
    for what in ("seconds", "results"):
        table = got[what]
        expect(isinstance(table, dict) and set(table) == set(keys),
               f"'{what}' must map each {item} ({', '.join(map(str, keys))}) to its list of runs.")
        expect(all(isinstance(table[k], (list, tuple)) and len(table[k]) == repeats for k in keys),
               f"with repeats = {repeats}, each {item} must have {repeats} runs in '{what}'.")
    try:
        order = np.array([[float(got["results"][k][r]) for k in keys] for r in range(repeats)])
        times = np.array([[float(got["seconds"][k][r]) for k in keys] for r in range(repeats)])
    except (TypeError, ValueError):
        raise CheckFailed("'results' must hold what each run returned and 'seconds' each run's time, as "
                          "numbers.") from None
    expect(all(order[r].max() < order[r + 1].min() for r in range(repeats - 1)),
           f"the runs were not interleaved: every {item} must run once in a round before any runs in the next round "
           "(a machine that drifts would otherwise bias the comparison).")
    expect(bool(np.all(np.isfinite(times)) and np.all(times > 0)), "every run's time must be a positive number of "
                                                                   "seconds.")
    return times


def expect_paired_verdict(got, figures, repeats: int, *, item: str = "configuration", what: str = "time") -> None:
    """Inside a checker of a *measure* exercise: ``got["ratios"]`` and ``got["verdict"]`` follow from ``figures``.

    ``figures`` has shape ``(repeats, 2)``: the reference's and the other's figure in each round. The ratios must be
    the paired ones (round by round, the second over the first) and the verdict the chapter's rule on them
    (:func:`sustainlab.evidence.verdict_from_ratios`).
    """
    import numpy as np

    from ..evidence import verdict_from_ratios

    ratios = np.asarray(got["ratios"], dtype=float)
    expect(ratios.shape == (repeats,), f"return one paired ratio per round ({repeats}), got shape {ratios.shape}.")
    expect_close(ratios, figures[:, 1] / figures[:, 0],
                 f"a paired ratio compares the two {item}s *within one round*: the second {item}'s {what} over the "
                 "first's (the reference), round by round.", rtol=1e-9)
    expect(got["verdict"] == verdict_from_ratios(ratios),
           "the verdict does not follow from your ratios: a difference counts only when every round agrees on its "
           "direction (use the chapter's verdict rule).")


def expect_close(actual, expected, hint: str, *, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Inside a checker: fail with ``hint`` unless ``actual`` is numerically close to ``expected``.

    Works for Python numbers, NumPy arrays and torch tensors; a shape mismatch or a non-numeric answer fails with a
    hint of its own rather than an exception.
    """
    import numpy as np

    try:
        a = _as_numpy(actual)
    except (TypeError, ValueError):
        raise CheckFailed(f"expected a number or an array, got {type(actual).__name__}.") from None
    e = _as_numpy(expected)
    if a.shape != e.shape:
        raise CheckFailed(f"expected a result of shape {e.shape}, got shape {a.shape}.")
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        raise CheckFailed("your result contains NaN or inf values.")
    if not np.allclose(a, e, rtol=rtol, atol=atol):
        raise CheckFailed(hint)


def _as_numpy(value):
    import numpy as np

    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=float)
    return array


def is_finite_number(value) -> bool:
    """True for a real, finite Python or NumPy scalar (not bool)."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(value))


def compare_close(hint: str, *, rtol: float = 1e-6, atol: float = 1e-8) -> Callable[[list, list, list], str | None]:
    """A ``compare`` for probes: every student output must be numerically close to the reference's.

    A probe on which the answer raised reports the exception; a wrong shape names both shapes; anything else wrong
    gives ``hint``.
    """

    def compare(student: list, reference: list, probes: list) -> str | None:
        for got, want in zip(student, reference):
            if isinstance(got, Raised):
                return got.describe() + " (on inputs the check had not shown before)"
            try:
                _close_nested(got, want, hint, rtol, atol)
            except CheckFailed as failure:
                return str(failure)
        return None

    return compare


def _close_nested(got, want, hint, rtol, atol) -> None:
    if isinstance(want, (tuple, list)):
        expect(isinstance(got, (tuple, list)) and len(got) == len(want),
               f"return {len(want)} values as a tuple, got {type(got).__name__}.")
        for g, w in zip(got, want):
            _close_nested(g, w, hint, rtol, atol)
        return
    if isinstance(want, str):
        expect(got == want, hint)
        return
    expect_close(got, want, hint, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------ plain-data evidence


def encode(value, _depth: int = 0):
    """A result as plain JSON data that keeps its type (array, tensor, tuple, dict, number, string, or "object")."""
    import numpy as np

    if _depth > 20:
        return {"t": "object", "type": "deeply nested value"}
    if value is None:
        return {"t": "none"}
    if isinstance(value, (bool, np.bool_)):
        return {"t": "bool", "v": bool(value)}
    if isinstance(value, int) and type(value) is int:
        return {"t": "int", "v": value}
    if type(value) is float:
        return {"t": "float", "v": value}
    if type(value) is str:
        return {"t": "str", "v": value[:10_000]}
    if isinstance(value, np.generic) and value.dtype.name in _NUMERIC_DTYPES:
        return {"t": "npscalar", "dtype": value.dtype.name, "v": value.item()}
    if isinstance(value, np.str_):
        return {"t": "str", "v": str(value)[:10_000]}
    if type(value).__module__.startswith("torch") and hasattr(value, "detach") and hasattr(value, "dtype"):
        array = value.detach().cpu().numpy()
        return {"t": "tensor", "dtype": str(value.dtype).replace("torch.", ""), "shape": list(array.shape),
                "v": array.ravel().tolist()}
    if isinstance(value, np.ndarray):
        if value.dtype.name in _NUMERIC_DTYPES or value.dtype.kind == "U":
            return {"t": "ndarray", "dtype": value.dtype.name if value.dtype.kind != "U" else "str",
                    "shape": list(value.shape), "v": [str(x) if value.dtype.kind == "U" else x
                                                      for x in value.ravel().tolist()]}
        return {"t": "object", "type": f"ndarray of {value.dtype.name}"}
    if isinstance(value, (tuple, list)):
        return {"t": "tuple" if isinstance(value, tuple) else "list", "v": [encode(x, _depth + 1) for x in value]}
    if isinstance(value, dict):
        return {"t": "dict", "v": [[encode(k, _depth + 1), encode(v, _depth + 1)] for k, v in value.items()]}
    if hasattr(value, "to_dict") and type(value).__module__.startswith("pandas"):
        return encode(value.to_dict(), _depth)
    return {"t": "object", "type": type(value).__name__[:80]}


class _Opaque:
    """Stands in, in the grader, for a result that is not plain data (only its type name travels)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name}>"


def decode(data, _budget: list | None = None):
    """Plain evidence data back to a value; raises :class:`EvidenceError` on anything malformed."""
    import numpy as np

    budget = _budget if _budget is not None else [MAX_ELEMENTS]
    if not isinstance(data, dict) or not isinstance(data.get("t"), str):
        raise EvidenceError("a value is not in the evidence format")
    kind, value = data["t"], data.get("v")
    budget[0] -= 1
    if budget[0] < 0:
        raise EvidenceError("evidence too large")
    if kind == "none":
        return None
    if kind == "bool" and type(value) is bool:
        return value
    if kind == "int" and type(value) is int:
        return value
    if kind == "float" and type(value) in (float, int):
        return float(value)
    if kind == "str" and type(value) is str:
        return value
    if kind == "npscalar" and data.get("dtype") in _NUMERIC_DTYPES and type(value) in (bool, int, float):
        return np.array(value, dtype=data["dtype"])[()]
    if kind in ("ndarray", "tensor"):
        shape, dtype = data.get("shape"), data.get("dtype")
        if (not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape)
                or not isinstance(value, list) or len(shape) > 32):
            raise EvidenceError("an array with a malformed shape")
        size = math.prod(shape)
        budget[0] -= size
        if size != len(value) or budget[0] < 0:
            raise EvidenceError("an array whose data does not match its shape")
        if dtype == "str" and kind == "ndarray":
            if not all(type(x) is str for x in value):
                raise EvidenceError("a string array with non-strings")
            return np.array(value, dtype=str).reshape(shape)
        if dtype not in _NUMERIC_DTYPES or not all(type(x) in (bool, int, float) for x in value):
            raise EvidenceError(f"an array of unsupported dtype {str(dtype)[:40]!r}")
        try:
            array = np.array(value, dtype=dtype).reshape(shape)
        except (OverflowError, ValueError):
            raise EvidenceError("an array whose values do not fit its dtype") from None
        if kind == "tensor":
            import torch

            return torch.from_numpy(array.copy())
        return array
    if kind in ("tuple", "list") and isinstance(value, list):
        items = [decode(x, budget) for x in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and isinstance(value, list):
        out = {}
        for pair in value:
            if not isinstance(pair, list) or len(pair) != 2:
                raise EvidenceError("a malformed dict entry")
            key = decode(pair[0], budget)
            try:
                out[key] = decode(pair[1], budget)
            except TypeError:
                raise EvidenceError("an unhashable dict key") from None
        return out
    if kind == "object" and type(data.get("type")) is str:
        name = re.sub(r"\W", "", data["type"])[:80] or "object"
        return type(name, (_Opaque,), {})(name)  # so a hint's type(x).__name__ names the student's type
    raise EvidenceError(f"a value of unknown kind {kind[:20]!r}")


def _raised_record(error: BaseException) -> dict:
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return {"raised": type(error).__name__[:80], "message": message}


def _raise_recorded(record: dict):
    kind, message = record.get("raised"), record.get("message", "")
    if type(kind) is not str or type(message) is not str:
        raise EvidenceError("a malformed exception record")
    if kind == "NotImplementedError":
        raise NotImplementedError(message)
    name = re.sub(r"\W", "", kind)[:80] or "Exception"
    raise type(name, (Exception,), {})(message[:200])


def _decode_call(record, budget) -> Any:
    if not isinstance(record, dict):
        raise EvidenceError("a malformed call record")
    if "raised" in record:
        _raise_recorded(record)
    if "result" not in record:
        raise EvidenceError("a call record without a result")
    return decode(record["result"], budget)


def _snapshot_args(args) -> list:
    import numpy as np

    out = []
    for arg in args:
        if isinstance(arg, np.ndarray) or (type(arg).__module__.startswith("torch") and hasattr(arg, "clone")):
            out.append(encode(arg))
        else:
            out.append(None)
    return out


class _Recorder:
    """Wraps the student's answer in the kernel: records each call's result and hands the checker its decoded copy."""

    def __init__(self, answer):
        self._answer = answer
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        if len(self.calls) >= MAX_CALLS:
            raise EvidenceError("too many calls")
        before = _snapshot_args(args)
        try:
            result = self._answer(*args, **kwargs)
        except Exception as error:
            record = _raised_record(error)
            self.calls.append(record)
            _raise_recorded(record)
        record = {"result": encode(result)}
        mutated = {}
        for i, (arg, was) in enumerate(zip(args, before)):
            if was is not None and encode(arg) != was:
                mutated[str(i)] = encode(arg)
        if mutated:
            record["mutated"] = mutated
        self.calls.append(record)
        return decode(record["result"])


class _Replay:
    """Stands in for the student's answer in the grader: returns the recorded results, in order."""

    def __init__(self, calls: list):
        if not isinstance(calls, list) or len(calls) > MAX_CALLS:
            raise EvidenceError("a malformed list of calls")
        self._calls = calls
        self._next = 0
        self._budget = [MAX_ELEMENTS]

    def __call__(self, *args, **kwargs):
        if self._next >= len(self._calls):
            raise EvidenceError("the evidence ends before the check does (incomplete or forged)")
        record = self._calls[self._next]
        self._next += 1
        result = _decode_call(record, self._budget)
        for key, value in (record.get("mutated") or {}).items():
            _apply_mutation(args, key, decode(value, self._budget))
        return result


def _apply_mutation(args, key, value) -> None:
    import numpy as np

    if not (isinstance(key, str) and key.isdigit() and int(key) < len(args)):
        raise EvidenceError("a malformed mutation record")
    arg = args[int(key)]
    try:
        if isinstance(arg, np.ndarray):
            arg[...] = np.asarray(value).reshape(arg.shape)
        else:
            arg.copy_(value.reshape(arg.shape))
    except Exception:
        raise EvidenceError("a mutation record that does not fit its argument") from None


def _blocked(*args, **kwargs):
    raise RuntimeError("this function is not available during this check: write the computation yourself.")


@contextlib.contextmanager
def unavailable(*targets):
    """Within the block, calling any of ``targets`` raises, however the caller got hold of it.

    How a checker enforces "an exercise is real work": the package function that would solve the exercise is made
    unavailable while the learner's answer runs. A target is either a plain Python function without closures, whose
    code object is swapped (not the module attribute), so a name imported earlier with ``from sustainlab.<module>
    import ...`` is blocked as well; or a ``(namespace, "name")`` pair for a built-in, such as
    ``(torch.nn.functional, "scaled_dot_product_attention")``, whose attribute is replaced for the duration (a name
    bound to it earlier escapes: built-ins have no code to swap).
    """
    functions = [t for t in targets if not isinstance(t, tuple)]
    attributes = [t for t in targets if isinstance(t, tuple)]
    saved_code = [f.__code__ for f in functions]
    saved_attributes = [getattr(namespace, name) for namespace, name in attributes]
    try:
        for f in functions:
            f.__code__ = _blocked.__code__
        for namespace, name in attributes:
            setattr(namespace, name, _blocked_attribute(f"{namespace.__name__}.{name}"))
        yield
    finally:
        for f, code in zip(functions, saved_code):
            f.__code__ = code
        for (namespace, name), value in zip(attributes, saved_attributes):
            setattr(namespace, name, value)


def _blocked_attribute(qualified_name: str):
    def blocked(*args, **kwargs):
        raise RuntimeError(f"{qualified_name} is not available during this check: write the computation yourself.")

    return blocked


def _probe_rng(seed: int, exercise_id: str):
    import numpy as np

    # One stream per exercise, so adding an exercise never changes another's probes.
    return np.random.default_rng([int(seed) % 2**64, *exercise_id.encode("utf-8")])


# ------------------------------------------------------------------------------------------------ collect / judge


def collect(exercise: Exercise, answer: Any, seed: int) -> dict:
    """In the kernel: run the answer through the exercise's checker and probes; return the evidence (plain data).

    Never decides anything and never raises for a wrong or crashing answer.
    """
    evidence: dict = {"format": EVIDENCE_FORMAT, "exercise": exercise.id, "callable": callable(answer)}
    if exercise.checker is not None:
        recorder = _Recorder(answer) if callable(answer) else answer
        try:
            exercise.checker(recorder)
        except Exception:  # the checker's own verdict is not evidence: the grader replays it
            pass
        evidence["calls"] = recorder.calls if callable(answer) else []
    if exercise.probes is not None:
        outputs = []
        if callable(answer):
            for args in exercise.probes(_probe_rng(seed, exercise.id)):
                try:
                    outputs.append({"result": encode(answer(*copy.deepcopy(tuple(args))))})
                except Exception as error:
                    outputs.append(_raised_record(error))
        evidence["probes"] = outputs
    return evidence


@dataclass(frozen=True)
class Verdict:
    """The grader's decision on one check: ``status`` is passed, failed or error (evidence unusable)."""

    status: str
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def judge(exercise: Exercise, evidence, seed: int) -> Verdict:
    """In the grader: the verdict on ``evidence`` (as loaded from JSON), recomputing every expected value here.

    Malformed, incomplete or forged evidence gives ``error`` with the reason, never ``passed``.
    """
    try:
        if not isinstance(evidence, dict) or evidence.get("format") != EVIDENCE_FORMAT:
            raise EvidenceError("not sustainlab evidence")
        if evidence.get("exercise") != exercise.id:
            raise EvidenceError(f"evidence of another exercise ({str(evidence.get('exercise'))[:40]!r})")
        is_callable = evidence.get("callable")
        if type(is_callable) is not bool:
            raise EvidenceError("evidence without the 'callable' flag")
        if exercise.checker is not None:
            answer = _Replay(evidence.get("calls")) if is_callable else _Opaque("value")
            try:
                exercise.checker(answer)
            except CheckFailed as failure:
                return Verdict("failed", str(failure))
            except EvidenceError:
                raise
            except NotImplementedError:
                return Verdict("failed", Raised("NotImplementedError").describe())
            except Exception as error:  # a replayed exception of the answer, or a checker tripped by odd data
                return Verdict("failed", Raised(type(error).__name__, _raised_record(error)["message"]).describe())
        if exercise.probes is not None:
            if not is_callable:
                return Verdict("failed", f'pass your function itself, e.g. check("{exercise.id}", '
                                         f'{exercise.answer or "your_function"}), not its result.')
            probes = list(exercise.probes(_probe_rng(seed, exercise.id)))
            recorded = evidence.get("probes")
            if not isinstance(recorded, list) or len(recorded) != len(probes):
                raise EvidenceError("evidence for a different number of probes")
            budget = [MAX_ELEMENTS]
            student = []
            for record in recorded:
                try:
                    student.append(_decode_call(record, budget))
                except EvidenceError:
                    raise
                except Exception as error:
                    student.append(Raised(type(error).__name__, _raised_record(error)["message"]))
            reference = exercise.reference()
            expected = [reference(*copy.deepcopy(tuple(args))) for args in probes]
            hint = exercise.compare(student, expected, probes)
            if hint:
                return Verdict("failed", str(hint))
    except EvidenceError as error:
        return Verdict("error", f"evidence rejected: {error}")
    return Verdict("passed")


def run_check(exercise: Exercise, answer: Any, seed: int = PUBLIC_SEED) -> tuple[bool, str]:
    """Collect and judge in this process (self-study, tests); returns ``(passed, hint)``, never raises."""
    verdict = judge(exercise, json.loads(json.dumps(collect(exercise, answer, seed))), seed)
    return verdict.passed, verdict.hint


def write_evidence(folder: str | os.PathLike, evidence: dict) -> None:
    """Write evidence as ``FOLDER/<id>.json`` (atomically: a half-written file is never read)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(evidence["exercise"]))
    text = json.dumps(evidence, allow_nan=True)
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(tmp, os.path.join(folder, f"{name}.json"))
