"""A small mutation-testing run: change one thing in a module, run that module's test file, see whether a test fails.

Usage::

    python benchmarks/mutation.py attention                 # 20 sampled mutants + the targeted ones
    python benchmarks/mutation.py fairness validation --sample 40 --seed 1
    python benchmarks/mutation.py runner --tests tests/test_runner.py --all-marks
    python benchmarks/mutation.py attention --list          # show the mutants, run nothing

Not part of ``make test``: each mutant costs one run of the test file (seconds to a minute on the course's 2 cores).

Why a small home-made mutator rather than mutmut or cosmic-ray
---------------------------------------------------------------
Both are on PyPI and are the tools to use for a full run (``mutmut run`` with ``source_paths`` and a test selection;
``cosmic-ray init/exec`` with a session file). Tried here: mutmut 3.8.1 installs, generates its trampolined copy, but
its coverage ("stats") phase reported "could not find any test case for any mutant" for this layout (tests that
import the package through a root ``conftest.py``), so it ran no mutant; cosmic-ray was not tried (it needs a
session database and a baseline run of the whole suite, long on a shared 2-core machine). This script does the
same thing on a curated operator set,
one module at a time, on a *sample* of mutants (seeded, so a run can be repeated), and it reports the survivors so
that a test can be written against each.

How it works
------------
1. The module is parsed with :mod:`ast`; every site where one operator applies is a candidate mutant:

   - comparison ``<``/``<=``/``>``/``>=``/``==``/``!=`` swapped for its neighbour or negation,
   - arithmetic ``+``/``-`` and ``*``/``/`` swapped,
   - ``and``/``or`` swapped, ``not x`` → ``x``, ``if c`` → ``if not c``,
   - an integer constant ``n`` → ``n + 1`` and a float constant ``x`` → ``2·x`` (docstrings, strings untouched),
   - ``return <value>`` → ``return None``.

   Plus, per module, a few *targeted* mutants: text substitutions that a review found surviving (e.g.
   ``time_attention`` returning ``0.0``), always run.
2. The package and the test file are copied to a temporary folder (data and notebooks linked), the mutated module is
   written there with :func:`ast.unparse`, and the test file runs with ``pytest -x`` (first failure kills the mutant).
   A mutant that makes the run exceed 3× the clean run's time (+10 s) counts as killed (timeout).
3. Printed: killed / survived per operator, the survivors (line, operator, code), and the totals.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Module -> its test file (default: tests/test_<module>.py).
TEST_FILES = {"validation": "tests/test_validation.py", "runner": "tests/test_runner.py"}

#: Mutants a review found surviving, as text substitutions (description, old, new) in the module's source; a mutant
#: whose ``old`` text is not in the module (the code was rewritten) is reported as not applicable.
TARGETED = {
    "attention": [
        ("time_attention returns 0.0",
         '    return times[0] if reduce == "min" else times[len(times) // 2]', "    return 0.0"),
        ("sdpa_kernel_used returns 'math'",
         "    from torch.nn.attention import SDPBackend, sdpa_kernel\n", '    return "math"\n'),
        ("the default query tiling is all queries at once",
         "    return min(n_q, max(16, _AUTO_BLOCK_SCORES // chunk_size))", "    return n_q"),
    ],
    "fairness": [
        ("compare_predictions' dp_difference is the TPR gap",
         '"dp_difference": demographic_parity_difference(y_true, y_pred, **kwargs)',
         '"dp_difference": equal_opportunity_difference(y_true, y_pred, **kwargs)'),
        ("compare_predictions' balanced_accuracy is 0.5",
         '"balanced_accuracy": _balanced_accuracy(truth, pred)', '"balanced_accuracy": 0.5'),
        ("agg='mean' does not skip NaN",
         'return float(np.mean(defined)) if agg == "mean"', 'return float(np.mean(values)) if agg == "mean"'),
    ],
    "runner": [
        ("course_notebooks ignores CHAPTERS",
         "    return listed + others", '    return sorted((root / "notebooks").glob("*.ipynb"))'),
    ],
    "validation": [
        ("integer rule accepts whole floats",
         "if isinstance(value, bool) or not isinstance(value, Integral):",
         "if isinstance(value, bool) or not isinstance(value, (Real, np.number)) or float(value) != int(value):"),
        ("check_same_length without its type check",
         "    lengths = {name: _n_samples(values, name) for name, values in arrays.items()}",
         "    lengths = {name: len(values) for name, values in arrays.items()}"),
    ],
}

_COMPARE_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}


@dataclass(frozen=True)
class Mutant:
    index: int  # position among the module's generic sites; -1 for a targeted mutant
    operator: str
    line: int
    description: str
    target: tuple[str, str] | None = None  # (old, new) text of a targeted mutant


def _docstring_nodes(tree):
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _skipped_nodes(tree):
    """Docstrings, f-string parts, annotations and ``__all__``: mutating them tests nothing."""
    skip = _docstring_nodes(tree)
    for node in ast.walk(tree):
        subtrees = []
        if isinstance(node, ast.JoinedStr):
            subtrees.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            subtrees += [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
            subtrees += [node.returns] if node.returns else []
        if isinstance(node, ast.AnnAssign):
            subtrees.append(node.annotation)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            subtrees.append(node)
        for sub in subtrees:
            skip.update(id(n) for n in ast.walk(sub))
    return skip


def _sites(tree):
    """Every (node, operator, description) where a generic operator applies, in a fixed order."""
    skip = _skipped_nodes(tree)
    sites = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _COMPARE_SWAP:
                    sites.append((node, ("compare", i), f"{type(op).__name__} -> {_COMPARE_SWAP[type(op)].__name__}"))
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
            sites.append((node, ("binop",), f"{type(node.op).__name__} -> {_BINOP_SWAP[type(node.op)].__name__}"))
        elif isinstance(node, ast.BoolOp):
            sites.append((node, ("boolop",), "and <-> or"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            sites.append((node, ("not",), "not x -> x"))
        elif isinstance(node, ast.If):
            sites.append((node, ("if",), "if c -> if not c"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            change = "n -> n + 1" if isinstance(node.value, int) else "x -> 2x"
            sites.append((node, ("constant",), f"{node.value!r}: {change}"))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            sites.append((node, ("return",), "return value -> return None"))
    return sites


def _apply(node, operator):
    kind = operator[0]
    if kind == "compare":
        i = operator[1]
        node.ops[i] = _COMPARE_SWAP[type(node.ops[i])]()
        return node
    if kind == "binop":
        node.op = _BINOP_SWAP[type(node.op)]()
        return node
    if kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return node
    if kind == "not":
        return node.operand
    if kind == "if":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
        return node
    if kind == "constant":
        node.value = node.value + 1 if isinstance(node.value, int) else node.value * 2
        return node
    if kind == "return":
        node.value = ast.Constant(value=None)
        return node
    raise ValueError(kind)


def generic_mutants(source: str) -> list[Mutant]:
    tree = ast.parse(source)
    return [Mutant(i, operator[0], getattr(node, "lineno", 0), description)
            for i, (node, operator, description) in enumerate(_sites(tree))]


def mutate(source: str, mutant: Mutant) -> str:
    if mutant.target is not None:
        old, new = mutant.target
        if old not in source:
            raise ValueError("not applicable: the code it changes is not in this version of the module")
        return source.replace(old, new, 1)
    tree = ast.parse(source)
    node, operator, _ = _sites(tree)[mutant.index]
    replacement = _apply(node, operator)
    if replacement is not node:  # ``not x -> x``: put the operand where the UnaryOp was
        for parent in ast.walk(tree):
            for field, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, field, replacement)
                elif isinstance(value, list):
                    for j, item in enumerate(value):
                        if item is node:
                            value[j] = replacement
    return ast.unparse(ast.fix_missing_locations(tree))


def _workspace(tmp: Path) -> Path:
    work = tmp / "repo"
    work.mkdir()
    shutil.copytree(ROOT / "sustainlab", work / "sustainlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "conftest.py", work / "conftest.py")
    for linked in ("data", "notebooks", "binder", "pyproject.toml", "environment.yml"):
        if (ROOT / linked).exists():
            os.symlink(ROOT / linked, work / linked)
    return work


def _run_tests(work: Path, test_file: str, marks: str | None, timeout: float) -> tuple[str, float]:
    command = [sys.executable, "-m", "pytest", test_file, "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--no-header", "-W", "ignore"]
    if marks:
        command += ["-m", marks]
    env = dict(os.environ, PYTHONPATH=str(work), SUSTAINLAB_PROGRESS="0")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return "survived", seconds
    if done.returncode == 5:  # no tests collected: the mutant broke nothing the tests can see
        return "survived", seconds
    return "killed", seconds


def run_module(module: str, *, sample: int, seed: int, tests: str | None, marks: str | None, list_only: bool,
               only_targeted: bool = False):
    path = ROOT / "sustainlab" / f"{module.replace('.', '/')}.py"
    source = path.read_text(encoding="utf-8")
    test_file = tests or TEST_FILES.get(module, f"tests/test_{module}.py")
    generic = generic_mutants(source)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(generic, min(sample, len(generic))), key=lambda m: m.index) if sample else generic
    targeted = [Mutant(-1, "targeted", source[:source.find(old)].count("\n") + 1 if old in source else 0,
                       description, (old, new))
                for description, old, new in TARGETED.get(module, [])]
    if only_targeted:
        chosen = []
    mutants = chosen + targeted
    print(f"\n== {module}: {len(generic)} generic sites, {len(chosen)} sampled (seed {seed}) + {len(targeted)} "
          f"targeted; "
          f"tests: {test_file}" + (f" -m '{marks}'" if marks else ""), flush=True)
    if list_only:
        for m in mutants:
            print(f"  line {m.line:>4} {m.operator:<9} {m.description}")
        return None
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        work = _workspace(Path(tmp))
        target = work / path.relative_to(ROOT)
        status, clean_s = _run_tests(work, test_file, marks, timeout=900)
        if status != "survived":
            print(f"  the clean run fails ({status}): fix the tests first")
            return None
        print(f"  clean run: {clean_s:.1f} s", flush=True)
        results = []
        for n, m in enumerate(mutants, 1):
            try:
                target.write_text(mutate(source, m), encoding="utf-8")
            except (ValueError, SyntaxError) as error:
                print(f"  [{n}/{len(mutants)}] skipped ({error})")
                continue
            status, seconds = _run_tests(work, test_file, marks, timeout=3 * clean_s + 10)
            results.append((m, status))
            print(f"  [{n}/{len(mutants)}] {status:<8} {seconds:5.1f} s  line {m.line:>4} {m.operator:<9} "
                  f"{m.description}", flush=True)
        target.write_text(source, encoding="utf-8")
    survivors = [m for m, status in results if status == "survived"]
    generic_results = [(m, s) for m, s in results if m.target is None]
    generic_survivors = [m for m, s in generic_results if s == "survived"]
    print(f"  -> {module}: generic {len(generic_survivors)}/{len(generic_results)} survived; targeted "
          f"{len(survivors) - len(generic_survivors)}/{len(results) - len(generic_results)} survived")
    for m in survivors:
        print(f"     survivor: line {m.line} {m.operator} {m.description}")
    return {"module": module, "generic": len(generic_results), "generic_survived": len(generic_survivors),
            "targeted": len(results) - len(generic_results),
            "targeted_survived": len(survivors) - len(generic_survivors)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="+", help="sustainlab modules, e.g. attention fairness validation runner")
    parser.add_argument("--sample", type=int, default=20, help="generic mutants per module (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tests", default=None, help="test file (default tests/test_<module>.py)")
    parser.add_argument("--all-marks", action="store_true", help="also run tests marked slow (runner's are all slow)")
    parser.add_argument("--list", action="store_true", help="list the mutants without running them")
    parser.add_argument("--only-targeted", action="store_true", help="run the targeted mutants only")
    args = parser.parse_args(argv)
    rows = []
    for module in args.modules:
        marks = None if args.all_marks or module == "runner" else "not slow and not gpu and not browser"
        row = run_module(module, sample=args.sample, seed=args.seed, tests=args.tests, marks=marks,
                         list_only=args.list, only_targeted=args.only_targeted)
        if row:
            rows.append(row)
    if rows:
        print("\nmodule        generic survived   targeted survived")
        for r in rows:
            print(f"{r['module']:<13} {r['generic_survived']:>3} / {r['generic']:<3}          "
                  f"{r['targeted_survived']:>3} / {r['targeted']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
