"""Tests for sustainlab.energy: measuring a block, published footprints, per-unit figures, distillation loss."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from sustainlab import energy
from sustainlab.datasets import load_digits_tensors
from sustainlab.optim import make_loader, make_mlp
from sustainlab.energy import (
    PUBLISHED_ESTIMATES,
    Measurement,
    carbon_intensity,
    carbon_intensity_table,
    compare_runs,
    distillation_loss,
    estimate_footprint,
    measure,
    per_unit,
)


def _busy(seconds: float) -> int:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += sum(range(1000))
    return x


def _tracker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, threading.Timer)]


# -- measure -------------------------------------------------------------------------------------------------------


def test_measure_fills_fields_consistently(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    with measure("busy", country_iso_code="DEU") as m:
        assert not m.finished and math.isnan(m.energy_kwh)
        assert "still running" in m.summary()
        _busy(0.3)
    assert m.finished and m.label == "busy"
    assert 0.25 < m.duration_s < 5
    assert m.energy_kwh > 0
    assert m.cpu_energy_kwh > 0, "a busy CPU block must get a CPU figure"
    assert m.energy_kwh == pytest.approx(m.cpu_energy_kwh + m.gpu_energy_kwh + m.ram_energy_kwh, rel=1e-9)
    assert m.country_iso_code == "DEU" and m.country_name == "Germany"
    assert m.carbon_intensity_g_per_kwh == pytest.approx(carbon_intensity("DEU"))
    assert m.emissions_kg == pytest.approx(m.energy_kwh * m.carbon_intensity_g_per_kwh / 1000, rel=1e-6)
    # Plausible average power for a CPU block on any laptop or server: between 0.1 W and 2 kW.
    assert 0.1 < m.average_power_w < 2000
    assert set(m.method) >= {"cpu", "gpu", "ram", "carbon_intensity"}
    assert all(v.split(":")[0] in ("sensor", "estimate", "none", "given") for v in m.method.values())
    assert m.method["ram"].startswith("estimate"), "codecarbon never measures RAM"
    # Quiet and file-free by default.
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert list(tmp_path.iterdir()) == []


def test_short_block_still_gets_a_cpu_figure():
    with measure("20 ms") as m:
        _busy(0.02)
    assert m.cpu_energy_kwh > 0 and m.ram_energy_kwh > 0


def test_no_sensor_path_says_estimate():
    # The course's containers (and most laptops) have no readable sensor: the summary must say the figure is an
    # estimate. Where a sensor exists, the summary must not claim an estimate for the CPU.
    with measure("probe") as m:
        pass
    if m.method["cpu"].startswith("estimate"):
        assert m.estimated
        assert "ESTIMATE" in m.summary()
        assert "estimate" in repr(m)
    assert "ESTIMATE" in energy.how_energy_is_measured() or not m.estimated


class _FakeHW:
    def __init__(self, name, **attrs):
        self.__class__ = type(name, (), {})
        self.__dict__.update(attrs)


@pytest.mark.parametrize(
    "hardware, expected",
    [
        ([_FakeHW("CPU", _mode="intel_rapl", _tdp=65, _model="i7")], {"cpu": "sensor: RAPL"}),
        ([_FakeHW("CPU", _mode="cpu_load", _tdp=8, _model="EPYC")], {"cpu": "estimate: CPU load × assumed power of 8 W"}),
        ([_FakeHW("CPU", _mode="constant", _tdp=85, _model="x")], {"cpu": "estimate: constant share"}),
        ([_FakeHW("GPU")], {"gpu": "sensor: NVML", "cpu": "none"}),
        ([_FakeHW("RAM", _force_ram_power=None)], {"ram": "estimate: constant power"}),
    ],
)
def test_describe_hardware_tells_sensor_from_model(hardware, expected):
    class Tracker:
        _hardware = hardware

    method = energy._describe_hardware(Tracker())
    for part, prefix in expected.items():
        assert method[part].startswith(prefix)


def test_sensor_only_measurement_is_not_estimated():
    m = Measurement("x", "FRA", 1.0, method={"cpu": "sensor: RAPL", "gpu": "none: no GPU", "ram": "sensor: RAPL"})
    assert not m.estimated
    assert m.how() == "measured by sensors"
    m.method["ram"] = "estimate: constant"
    assert m.estimated and m.sensor_parts == ["cpu"]
    assert m.how() == "PARTLY MEASURED: CPU from a sensor, RAM estimated"
    gpu_box = Measurement("x", "FRA", 1.0, method={"cpu": "estimate: load", "gpu": "sensor: NVML", "ram": "estimate: c"})
    assert gpu_box.how() == "PARTLY MEASURED: GPU from a sensor, CPU/RAM estimated"
    no_sensor = Measurement("x", "FRA", 1.0, method={"cpu": "estimate: load", "gpu": "none: -", "ram": "estimate: c"})
    assert no_sensor.how().startswith("ESTIMATE") and no_sensor.sensor_parts == []


def test_block_that_raises_stops_tracker_and_reraises():
    before = len(_tracker_threads())
    with pytest.raises(KeyError, match="boom"):
        with measure("fails") as m:
            _busy(0.05)
            raise KeyError("boom")
    assert m.finished and m.energy_kwh > 0
    assert len(_tracker_threads()) == before, "tracker threads left running"


def test_no_threads_left_after_many_measurements():
    before = len(_tracker_threads())
    for i in range(3):
        with measure(f"run {i}"):
            _busy(0.01)
    assert len(_tracker_threads()) == before


def test_nested_measurements():
    with measure("outer") as outer:
        _busy(0.05)
        with measure("inner") as inner:
            _busy(0.05)
    assert outer.finished and inner.finished
    assert outer.duration_s > inner.duration_s


def test_decorator_measures_every_call():
    @measure("square")
    def square(x):
        return x * x

    assert square(3) == 9 and square(4) == 16
    assert [m.label for m in square.meter.measurements] == ["square", "square"]
    assert square.meter.last.finished


def test_pue_and_forced_intensity():
    with measure("pue", pue=1.5, carbon_intensity_g_per_kwh=100.0) as m:
        _busy(0.05)
    assert m.pue == 1.5 and m.carbon_intensity_g_per_kwh == 100.0
    assert m.method["carbon_intensity"].startswith("given")
    assert m.emissions_kg == pytest.approx(m.energy_kwh * 0.1, rel=1e-6)


def test_output_dir_writes_csv_only_when_asked(tmp_path):
    with measure("csv", output_dir=str(tmp_path)):
        _busy(0.01)
    assert (tmp_path / "emissions.csv").exists()


def test_tracker_failure_gives_nan_and_a_warning(monkeypatch):
    class Broken:
        _start_time = None

        def start(self):
            pass  # codecarbon's start() swallows its errors and leaves _start_time None

        def stop(self):
            return None

    monkeypatch.setattr(energy.Meter, "_tracker", lambda self: Broken())
    with pytest.warns(RuntimeWarning, match="codecarbon returned no data"):
        with measure("broken") as m:
            pass
    assert m.finished and math.isnan(m.energy_kwh) and m.duration_s >= 0
    assert "unavailable" in m.summary()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_energy_is_read_from_nvml():
    a = torch.randn(2048, 2048, device="cuda")
    with measure("gpu matmul") as m:
        for _ in range(200):
            a = (a @ a).tanh()
        torch.cuda.synchronize()
    assert m.method["gpu"].startswith("sensor")
    assert m.gpu_energy_kwh > 0


# -- carbon intensity ----------------------------------------------------------------------------------------------


def test_carbon_intensity_matches_codecarbon_data():
    assert carbon_intensity("FRA") == pytest.approx(56.039, abs=1e-3)
    assert carbon_intensity("fra") == carbon_intensity("FRA")
    table = carbon_intensity_table(["POL", "FRA", "SWE"])
    assert list(table["country_iso_code"]) == ["SWE", "FRA", "POL"]
    assert table["g_per_kwh"].is_monotonic_increasing
    assert len(carbon_intensity_table()) > 150


# -- bad input -----------------------------------------------------------------------------------------------------

BAD_INPUT = [
    (lambda: measure(country_iso_code="XYZ"), ValueError, "Unknown country_iso_code 'XYZ'"),
    (lambda: measure(country_iso_code="france"), ValueError, "Did you mean 'FRA'"),
    (lambda: measure(country_iso_code=250), TypeError, "country_iso_code must be a 3-letter ISO code"),
    (lambda: measure(pue=0.9), ValueError, "pue must be >= 1.0"),
    (lambda: measure(pue=float("nan")), ValueError, "pue must be a finite number"),
    (lambda: measure(carbon_intensity_g_per_kwh=-1), ValueError, "carbon_intensity_g_per_kwh must be >= 0"),
    (lambda: measure(tracking_mode="gpu"), ValueError, "tracking_mode must be one of"),
    (lambda: measure(interval_s=0), ValueError, "interval_s must be > 0"),
    (lambda: measure(3), TypeError, "label must be a string"),
    (lambda: carbon_intensity("ZZZ"), ValueError, "Unknown country_iso_code"),
    (
        lambda: estimate_footprint(hours=-1, n_devices=1, device_power_w=300, carbon_intensity_kg_per_kwh=0.4),
        ValueError,
        "hours must be >= 0",
    ),
    (
        lambda: estimate_footprint(hours=1, n_devices=1, device_power_w=math.inf, carbon_intensity_kg_per_kwh=0.4),
        ValueError,
        "device_power_w must be a finite number",
    ),
    (
        lambda: estimate_footprint(hours=1, n_devices=1, device_power_w=-5, carbon_intensity_kg_per_kwh=0.4),
        ValueError,
        "device_power_w must be >= 0",
    ),
    (
        lambda: estimate_footprint(hours=float("nan"), n_devices=1, device_power_w=5, carbon_intensity_kg_per_kwh=0.4),
        ValueError,
        "hours must be a finite number",
    ),
    (
        lambda: estimate_footprint(hours=1, n_devices=1, device_power_w=5, pue=0.8, carbon_intensity_kg_per_kwh=0.4),
        ValueError,
        "pue must be >= 1.0",
    ),
    (lambda: estimate_footprint(1, 1, 300, 1.1, 0.4), TypeError, "positional"),
    (lambda: per_unit(Measurement("x", "FRA", 1.0), steps=10), ValueError, "finished Measurement"),
    (lambda: distillation_loss(torch.zeros(2, 3), (torch.zeros(2).long(), torch.zeros(2, 3)), temperature=0), ValueError,
     "temperature must be > 0"),
    (lambda: distillation_loss(torch.zeros(2, 3), (torch.zeros(2).long(), torch.zeros(2, 3)), alpha=1.5), ValueError,
     "alpha must be <= 1.0"),
]


@pytest.mark.parametrize("call, error, message", BAD_INPUT)
def test_bad_input_is_rejected_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call()


# -- published estimates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("published", PUBLISHED_ESTIMATES, ids=lambda p: p.name)
def test_reproduces_published_estimates(published):
    ours = published.recompute()
    assert ours.emissions_kg == pytest.approx(published.published_emissions_kg, rel=published.rel_tol)
    if published.published_energy_kwh is not None:
        assert ours.energy_kwh == pytest.approx(published.published_energy_kwh, rel=published.rel_tol)
    assert published.citation and "(20" in published.citation


def test_published_table_values():
    table = energy.reproduce_published()
    assert (table["rel_diff_emissions"].abs() < 0.005).all()
    gpt3 = table.set_index("estimate").loc["GPT-3 (175B)"]
    assert round(gpt3["ours_tCO2e"]) == 553 and gpt3["published_tCO2e"] == 552


def test_estimate_footprint_formula():
    f = estimate_footprint(hours=10, n_devices=4, device_power_w=250, pue=1.2, carbon_intensity_kg_per_kwh=0.5)
    assert f.energy_kwh == pytest.approx(4 * 0.25 * 10 * 1.2)
    assert f.emissions_kg == pytest.approx(f.energy_kwh * 0.5)
    assert f.energy_mwh == pytest.approx(f.energy_kwh / 1000)
    zero = estimate_footprint(hours=0, n_devices=4, device_power_w=250, carbon_intensity_kg_per_kwh=0.5)
    assert zero.energy_kwh == 0 and zero.emissions_kg == 0


# -- per-unit figures and comparisons ------------------------------------------------------------------------------


def _finished(label="a", kwh=2e-6, seconds=1.0):
    return Measurement(
        label, "FRA", 1.0, duration_s=seconds, energy_kwh=kwh, cpu_energy_kwh=kwh / 4, gpu_energy_kwh=0.0,
        ram_energy_kwh=3 * kwh / 4, emissions_kg=kwh * 0.056, carbon_intensity_g_per_kwh=56.0,
        method={"cpu": "estimate: x", "gpu": "none: y", "ram": "estimate: z"}, finished=True,
    )


def test_per_unit():
    m = _finished(kwh=1e-6)  # 3.6 J
    out = per_unit(m, steps=36, samples=360, flops=3.6e9)
    assert out["J_per_step"] == pytest.approx(0.1)
    assert out["J_per_sample"] == pytest.approx(0.01)
    assert out["J_per_flop"] == pytest.approx(1e-9)
    assert out["mg_per_step"] == pytest.approx(1e-6 * 0.056 * 1e6 / 36)
    assert set(per_unit(m, steps=1)) == {"J_per_step", "mg_per_step"}
    with pytest.raises(ValueError, match="steps must be > 0"):
        per_unit(m, steps=0)


def test_compare_runs_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    runs = [_finished("a", 1e-6), _finished("b", 2e-6)]
    table = compare_runs(runs, extra={"b": {"accuracy": 0.9}})
    assert list(table["label"]) == ["a", "b"]
    assert table["energy_J"].tolist() == pytest.approx([3.6, 7.2])
    assert table.loc[1, "accuracy"] == 0.9 and math.isnan(table.loc[0, "accuracy"])
    assert (table["method"] == "estimate").all()
    ax = energy.plot_runs(runs)
    assert ax.get_ylabel() == "energy (J)"
    s = runs[0].summary()
    assert "CPU 25%" in s and "RAM 75%" in s and "56 g/kWh" in s


# -- distillation loss ---------------------------------------------------------------------------------------------


def test_distillation_loss_properties():
    torch.manual_seed(0)
    student = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    ce = F.cross_entropy(student, y)
    assert torch.allclose(distillation_loss(student, (y, teacher), alpha=0.0), ce)
    # Student equal to teacher: the KL term vanishes.
    same = distillation_loss(student, (y, student.detach()), alpha=0.3, temperature=2.0)
    assert torch.allclose(same, 0.7 * ce, atol=1e-6)
    # Parity with the textbook formula.
    T, a = 3.0, 0.6
    p_t = F.softmax(teacher / T, dim=-1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / T, dim=-1))).sum(-1).mean()
    expected = (1 - a) * ce + a * T**2 * kl
    got = distillation_loss(student, (y, teacher), temperature=T, alpha=a)
    assert torch.allclose(got, expected, atol=1e-6)
    got.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_packed_distillation_targets_round_trip():
    torch.manual_seed(0)
    y = torch.tensor([0, 3, 9, 1])
    teacher = torch.randn(4, 10)
    packed = energy.pack_distillation_targets(y, teacher)
    assert packed.shape == (4, 11) and packed.dtype == torch.float32
    student = torch.randn(4, 10)
    assert torch.allclose(distillation_loss(student, packed), distillation_loss(student, (y, teacher)))
    # Plain labels (held-out data) give ordinary cross-entropy.
    assert torch.allclose(distillation_loss(student, y), F.cross_entropy(student, y))
    with pytest.raises(ValueError, match="Expected y of shape"):
        energy.pack_distillation_targets(y[:3], teacher)


@pytest.mark.slow
def test_lever_experiment_helpers_are_deterministic_and_distillation_trains():
    import functools

    torch.set_num_threads(1)
    X_tr, y_tr, X_te, y_te = load_digits_tensors()
    assert X_tr.shape == (1347, 64) and X_te.shape == (450, 64)
    assert abs(float(X_tr.mean())) < 1e-5
    test = make_loader(X_te, y_te, 512, shuffle=False)

    def run(label, **kw):
        return energy.run_training(label, make_mlp((32,)), make_loader(X_tr, y_tr, 64), test,
                                   device="cpu", epochs=3, lr=3e-3, **kw)

    a, b = run("a"), run("b")
    assert a.history.loss == b.history.loss, "same seed, same batches: same losses"
    assert a.n_params == 64 * 32 + 32 + 32 * 10 + 10
    assert a.flops == energy.training_flops(a.model, a.history.samples_seen)
    teacher_logits = a.model(X_tr).detach()
    d = energy.run_training(
        "distilled", make_mlp((32,)),
        make_loader(X_tr, energy.pack_distillation_targets(y_tr, teacher_logits), 64), test, device="cpu",
        epochs=3, lr=3e-3, loss_fn=functools.partial(distillation_loss, temperature=2.0, alpha=0.5),
    )
    assert d.history.samples_seen == a.history.samples_seen
    assert d.eval_accuracy > 0.8
    stopped = run("early", target_accuracy=0.5)
    assert stopped.history.epochs == 1 and stopped.history.stopped_early
    table = energy.lever_table([a, b, d], reference="b")
    assert list(table["run"]) == ["a", "b", "distilled"]
    assert table.loc[1, "energy_vs_ref"] == pytest.approx(1.0)
    assert (table["eval_acc"] > 0.8).all()
