"""Tests for sustainlab.utils: seeding, device choice, timing, progress bars."""

import random
import time

import numpy as np
import pytest
import torch

from sustainlab import utils
from sustainlab.utils import Timer, check_shape, pick_device, progress, progress_enabled, seed_everything


def _draws():
    return random.random(), np.random.rand(3), torch.rand(3), torch.randn(2, 2)


def test_seed_everything_makes_python_numpy_and_torch_reproducible():
    """Do two runs after the same seed give identical numbers from every generator?"""
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    second = _draws()
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])


def test_seed_everything_different_seeds_differ():
    """Does the seed actually matter?"""
    seed_everything(1)
    a = torch.rand(5)
    seed_everything(2)
    assert not torch.equal(a, torch.rand(5))


@pytest.mark.parametrize("bad, error, message", [(-1, ValueError, "seed must be >= 0"),
                                                (1.5, TypeError, "seed must be an integer"),
                                                (2.0, TypeError, "seed must be an integer"),
                                                ("0", TypeError, "seed must be an integer"),
                                                (None, TypeError, "seed must be an integer"),
                                                (True, TypeError, "seed must be an integer")])
def test_seed_everything_rejects_bad_seeds(bad, error, message):
    """The package's one integer rule (numbers.Integral, not bool), with its messages."""
    with pytest.raises(error, match=message):
        seed_everything(bad)


def test_seed_everything_accepts_numpy_integers():
    assert seed_everything(np.int64(3)) == 3


def test_pick_device_cpu_and_default(monkeypatch):
    monkeypatch.delenv("SUSTAINLAB_DEVICE", raising=False)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == utils.available_devices()[0]


def test_pick_device_prefers_cuda_then_mps(monkeypatch):
    """Is the order CUDA, then MPS, then CPU when several are present?"""
    monkeypatch.delenv("SUSTAINLAB_DEVICE", raising=False)
    monkeypatch.setattr(utils, "available_devices", lambda: ["mps", "cpu"])
    assert pick_device().type == "mps"
    monkeypatch.setattr(utils, "available_devices", lambda: ["cuda", "mps", "cpu"])
    assert pick_device().type == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_pick_device_unavailable_cuda_says_what_is_available():
    with pytest.raises(RuntimeError, match=r"pick_device\('cuda'\) asks for 'cuda'.*Available here: .*cpu"):
        pick_device("cuda")


def _cpu_only_machine(monkeypatch, cuda_build=None):
    monkeypatch.setattr(utils, "available_devices", lambda: ["cpu"])
    monkeypatch.setattr(torch.version, "cuda", cuda_build)


def test_device_variable_on_a_cpu_only_build_says_what_was_asked_installed_and_the_fix(monkeypatch):
    """SUSTAINLAB_DEVICE=cuda with a CPU wheel: one line naming the variable, the build and both ways out."""
    _cpu_only_machine(monkeypatch)
    monkeypatch.setenv("SUSTAINLAB_DEVICE", "cuda")
    with pytest.raises(RuntimeError) as caught:
        pick_device()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("SUSTAINLAB_DEVICE=cuda asks for 'cuda'")
    assert f"PyTorch {torch.__version__} is a CPU-only build" in message
    assert "unset SUSTAINLAB_DEVICE" in message and "install a build of PyTorch with CUDA" in message


def test_device_variable_with_a_cuda_build_but_no_gpu_blames_the_driver_not_the_build(monkeypatch):
    _cpu_only_machine(monkeypatch, cuda_build="12.1")
    monkeypatch.setenv("SUSTAINLAB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match=r"built for CUDA 12\.1 yet sees no NVIDIA GPU.*check the driver") as caught:
        pick_device()
    assert "install a build" not in str(caught.value)


def test_sustainlab_env_reports_an_unusable_device_variable_instead_of_crashing(monkeypatch, capsys):
    from sustainlab.cli import main

    _cpu_only_machine(monkeypatch)
    monkeypatch.setenv("SUSTAINLAB_DEVICE", "cuda")
    assert main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["device", "cpu"] for line in lines)
    row = next(line for line in lines if line.startswith("SUSTAINLAB_DEVICE"))
    assert "NOT USABLE" in row and "CPU-only build" in row
    assert any(line.startswith("torch build") and "CPU-only" in line for line in lines)


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:x", ""])
def test_pick_device_unknown_name(bad):
    with pytest.raises(ValueError, match="Unknown device"):
        pick_device(bad)


def test_pick_device_environment_variable(monkeypatch):
    monkeypatch.setenv("SUSTAINLAB_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("SUSTAINLAB_DEVICE", "quantum")
    with pytest.raises(ValueError, match=r"Unknown device 'quantum' \(SUSTAINLAB_DEVICE=quantum\)"):
        pick_device()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pick_device_finds_cuda_on_a_gpu_machine():
    assert pick_device().type == "cuda"
    assert pick_device("cuda:0") == torch.device("cuda:0")


def test_timer_measures_elapsed_time():
    with Timer() as timer:
        time.sleep(0.05)
    assert 0.04 <= timer.elapsed_s < 1.0
    assert "s)" in repr(timer)


def test_timer_synchronizes_before_reading_the_clock(monkeypatch):
    """Does the timer wait for queued GPU work at both ends of the block?"""
    calls = []
    monkeypatch.setattr(utils, "synchronize", lambda device=None: calls.append(device))
    with Timer("cuda"):
        calls.append("work")
    assert calls == ["cuda", "work", "cuda"]


def test_progress_is_quiet_under_the_runners(monkeypatch):
    monkeypatch.setenv(utils.PROGRESS_ENV, "0")
    assert not progress_enabled()
    assert progress(range(3)).disable
    monkeypatch.setenv(utils.PROGRESS_ENV, "1")
    assert progress_enabled()
    bar = progress(range(3))
    assert not bar.disable and list(bar) == [0, 1, 2]


def test_check_shape():
    check_shape(torch.zeros(2, 3), (2, None))
    with pytest.raises(ValueError, match=r"Expected shape \(2, 4\), got \(2, 3\)"):
        check_shape(torch.zeros(2, 3), (2, 4))
    with pytest.raises(ValueError, match="Expected shape"):
        check_shape(torch.zeros(2, 3), (2, 3, 1))


def test_environment_report_lists_versions_and_device():
    report = utils.environment_report()
    assert report["torch"] == torch.__version__.split("+")[0] or report["torch"].startswith(torch.__version__[:4])
    assert report["device"] in ("cpu", "cuda", "mps")
