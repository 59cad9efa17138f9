"""The dependency files agree: pyproject ranges, the lock file, environment.yml and binder/ (so they can't drift)."""

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "binder" / "requirements-lock.txt"
BINDER_REQUIREMENTS = ROOT / "binder" / "requirements.txt"  # what repo2docker installs; environment.yml too
CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # PyTorch's CPU wheel index


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements():
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _lock():
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "==" in line and ";" not in line, f"lock file line is not an exact pin: {line!r}"
        name, version = line.split("==")
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_lock_pins_every_dependency_inside_its_range():
    pins = _lock()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not pinned in {LOCK.relative_to(ROOT)}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} in the lock file is outside pyproject's range {req.specifier}"
        )


def test_pyproject_uses_ranges_not_pins():
    """Hard pins inside a package break learners' other environments."""
    for req in _requirements():
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), f"{req} is pinned in pyproject.toml"


def test_torch_is_locked_at_the_local_cpu_wheel_version_and_installed_first():
    pins = _lock()
    assert pins["torch"] == Version("2.13.0")
    first_pin = next(l for l in LOCK.read_text().splitlines() if l.strip() and not l.startswith("#"))
    assert first_pin == "torch==2.13.0"
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK   := binder/requirements-lock.txt" in makefile
    assert makefile.index("^torch==' $(LOCK)") < makefile.index("-r $(LOCK)")


def _pip_options(path, seen=()):
    """The lines pip reads from the requirements file ``path``, following ``-r`` (relative to the file, as pip does)."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            nested = (path.parent / line.removeprefix("-r ").strip()).resolve()
            assert nested not in seen, f"{path.name} includes itself"
            lines += _pip_options(nested, (*seen, path.resolve()))
        elif line:
            lines.append(line)
    return lines


def _makefile_requirement_files():
    """Every requirements file the Makefile's set-up reads (its ``-r`` arguments and the file torch is read from)."""
    makefile = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+)\s*:=\s*(\S+)\s*$", makefile, flags=re.M))
    expand = lambda text: re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)
    paths = {expand(p) for p in re.findall(r"-r (\S+)", makefile)}
    paths |= {expand(p) for p in re.findall(r"grep -E '\^torch==' (\$\(\w+\)|[^\s)]+)", makefile)}
    return sorted(ROOT / p for p in paths)


def test_makefile_installs_from_the_lock_which_names_no_index():
    """make lab/test must work where only PyPI (or local wheels) can be reached: no extra index on their path."""
    files = _makefile_requirement_files()
    assert files == [LOCK], f"the Makefile installs from {files}"
    assert BINDER_REQUIREMENTS not in files
    for line in _pip_options(LOCK):
        assert not line.startswith("-"), f"{LOCK.name} has a pip option {line!r}: keep index options out of the lock"


def test_binder_installs_the_lock_with_the_cpu_build_of_torch():
    """repo2docker installs binder/requirements.txt: PyTorch's CPU index plus exactly the lock, nothing else."""
    own = [l.split("#", 1)[0].strip() for l in BINDER_REQUIREMENTS.read_text().splitlines()]
    own = [l for l in own if l]
    assert own == [f"--extra-index-url {CPU_INDEX}", f"-r {LOCK.name}"]
    # The torch pin is the lock's; PyTorch's CPU index offers it as 2.13.0+cpu, which satisfies that pin and ranks
    # above PyPI's 2.13.0 (the CUDA build on Linux), so pip picks the CPU wheel.
    pins = [l for l in _pip_options(BINDER_REQUIREMENTS) if not l.startswith("-")]
    assert pins == [l for l in _pip_options(LOCK)]
    (pin,) = Requirement(next(p for p in pins if p.startswith("torch=="))).specifier
    cpu_build = Version(f"{pin.version}+cpu")
    assert pin.contains(cpu_build) and cpu_build > Version(pin.version)


def test_installed_versions_match_the_lock():
    """The environment the tests run in is the locked one (for the core packages)."""
    from importlib import metadata

    pins = _lock()
    for req in _requirements():
        installed = Version(metadata.version(req.name))
        assert Version(installed.base_version) == pins[canonicalize_name(req.name)], f"{req.name} {installed}"


def test_environment_yml_installs_the_lock_and_the_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "sustainlab"
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert python.split("=")[-1] == runtime.removeprefix("python-"), "environment.yml and binder/runtime.txt disagree"
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-e ." in pip_section
    # Like Binder: the lock through binder/requirements.txt, so torch is the CPU build (not PyPI's CUDA wheel).
    assert "-r binder/requirements.txt" in pip_section
    assert f"--extra-index-url {CPU_INDEX}" in _pip_options(BINDER_REQUIREMENTS)
    assert not any("-r" in line and "requirements-lock" in line for line in pip_section), "would bypass the CPU index"


def test_binder_installs_the_package_and_registers_the_kernel():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert re.search(r"pip install .*-e \.", post_build)
    assert "ipykernel install" in post_build and "--name sustainlab" in post_build
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    # repo2docker ignores files outside binder/ when that folder exists: the lock must live inside it.
    assert LOCK.exists()
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime)
    assert Version(runtime.removeprefix("python-")) >= Version("3.10")


def test_binder_link_opens_the_welcome_notebook_in_jupyterlab():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"https://mybinder\.org/v2/gh/[^)\s]+", readme)
    assert links, "README has no Binder link"
    # Binder learners get their own exercise copies too (postBuild writes them, as `make lab` does).
    assert all("urlpath=lab/tree/exercises/00_welcome.ipynb" in link for link in links)
    assert (ROOT / "notebooks" / "00_welcome.ipynb").exists()
    assert "sustainlab exercises --src notebooks --dest exercises" in (ROOT / "binder" / "postBuild").read_text()


def test_binder_starts_jupyterlab_with_the_course_server_settings():
    start = ROOT / "binder" / "start"
    assert start.stat().st_mode & 0o111, "binder/start must be executable"
    text = start.read_text()
    assert "/jupyter-config" in text and "JUPYTER_CONFIG_PATH" in text and 'exec "$@"' in text


_DOWNLOADS = re.compile(r"\b(wget|curl)\b|fetch_openml|fetch_datasets|urlretrieve|urlopen|requests\.get|hf_hub_download")


def test_no_step_downloads_data():
    """Nothing in the Binder build, the package or the notebooks' code fetches data from the network."""
    sources = [ROOT / "binder" / "postBuild"] + sorted((ROOT / "sustainlab").rglob("*.py"))
    for path in sources:
        assert not _DOWNLOADS.search(path.read_text()), f"{path.relative_to(ROOT)} looks like it downloads something"
    import nbformat

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not _DOWNLOADS.search(cell.source), f"{path.name} has a cell that downloads something"
                assert "EmissionsTracker(" not in cell.source.replace("OfflineEmissionsTracker(", ""), (
                    f"{path.name} uses codecarbon's online tracker"
                )


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [l.strip() for l in ci.splitlines() if l.strip() and not l.startswith("#")]
    assert commands[-1] == "make test"
    assert "make test" in readme and "make lab" in readme
