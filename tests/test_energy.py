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
    assert m.grid.startswith("Germany grid, 381 g/kWh (2023 yearly average")
    assert "Germany grid" in m.summary() and "share of the energy" in m.summary()
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


def test_live_probe_and_its_report_agree():
    # Asserts on every machine: with or without a sensor, the one-line basis, how() and the probe's report must agree.
    with measure("probe") as m:
        _busy(0.02)
    report = energy.how_energy_is_measured()
    assert ("ESTIMATE" in report) == (m.estimated and not m.sensor_parts)
    assert ("ESTIMATE" in m.summary()) == ("ESTIMATE" in m.how())
    assert m.basis.split(":")[0] == ("estimate" if not m.sensor_parts else
                                     "measured" if not m.estimated else "partly measured")
    assert ("estimate" in repr(m)) == m.estimated


def test_no_sensor_measurement_reads_as_an_estimate_everywhere():
    m = _finished()
    m.basis = "estimate: CPU 2 threads × 4 W assumed × load, RAM 10 W assumed, no sensor"
    assert m.estimated and m.how().startswith("ESTIMATE")
    summary = m.summary()
    assert "what this is: ESTIMATE: CPU 2 threads × 4 W assumed × load, RAM 10 W assumed, no sensor" in summary
    assert "estimate" in repr(m)


def test_measurement_with_every_part_none_is_not_called_measured_by_sensors():
    # Regression: estimated used to be False here, so how() said "measured by sensors" for a block nobody measured.
    m = Measurement("x", "FRA", 1.0, method={"cpu": "none: -", "gpu": "none: -", "ram": "none: -"})
    assert m.estimated
    assert m.how().startswith("NOTHING MEASURED")
    assert Measurement("x", "FRA", 1.0).estimated


def test_basis_line_names_the_assumed_watts():
    class Tracker:
        _hardware = [_FakeHW("RAM", _force_ram_power=None),
                     _FakeHW("CPU", _mode="cpu_load", _tdp=8, _cpu_count=2, _model="EPYC")]

    m = _finished(kwh=10 * 2.0 / 3.6e6 * 1.5, seconds=2.0)  # RAM share 3/4 of the energy
    m.ram_energy_kwh = 10 * 2.0 / 3.6e6  # 10 W for 2 s
    assert energy._basis(Tracker(), m) == "estimate: CPU 2 threads × 4 W assumed × load, RAM 10 W assumed, no sensor"

    class Sensor:
        _hardware = [_FakeHW("CPU", _mode="intel_rapl", _tdp=65, _cpu_count=8, _model="i7")]

    rapl = Measurement("x", "FRA", 1.0, method={"cpu": "sensor: RAPL", "gpu": "none: -", "ram": "none: -"})
    assert energy._basis(Sensor(), rapl) == "measured: CPU read from RAPL energy counters"


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
    (lambda: measure(country_iso_code="ATA"), ValueError, "no grid carbon intensity"),
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
    # Shares of the energy, labelled as such (a bare "CPU 25%" reads like utilisation).
    assert "share of the energy: CPU 25%, RAM 75%" in s
    assert runs[0].shares() == pytest.approx({"CPU": 0.25, "RAM": 0.75})


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


# -- location and grid ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_location(monkeypatch):
    monkeypatch.delenv(energy.COUNTRY_ENV, raising=False)
    monkeypatch.delenv(energy.PUE_ENV, raising=False)
    monkeypatch.setattr(energy, "_LOCATION", {"country_iso_code": None, "pue": None})


def test_default_grid_is_the_world_average_and_named(no_location):
    assert energy.location()["country_iso_code"] == "WORLD"
    assert carbon_intensity() == pytest.approx(475.0)
    with measure("w") as m:
        _busy(0.02)
    assert m.country_iso_code == "WORLD" and m.carbon_intensity_g_per_kwh == pytest.approx(475.0)
    assert m.emissions_kg == pytest.approx(m.energy_kwh * 0.475, rel=1e-6)
    assert "World average grid, 475 g/kWh (IEA" in m.summary()
    assert "set_location" in m.summary()


def test_environment_then_set_location_then_argument(no_location, monkeypatch):
    monkeypatch.setenv("SUSTAINLAB_COUNTRY", "swe")
    monkeypatch.setenv("SUSTAINLAB_PUE", "1.3")
    assert energy.location() == {"country_iso_code": "SWE", "pue": 1.3,
                                 "source": "country from SUSTAINLAB_COUNTRY; PUE from SUSTAINLAB_PUE"}
    meter = measure("x")
    assert (meter.country_iso_code, meter.pue) == ("SWE", 1.3)
    energy.set_location("POL", pue=1.1)
    meter = measure("x")
    assert (meter.country_iso_code, meter.pue) == ("POL", 1.1)
    assert carbon_intensity() == carbon_intensity("POL")
    meter = measure("x", country_iso_code="FRA", pue=1.0)
    assert (meter.country_iso_code, meter.pue) == ("FRA", 1.0)


@pytest.mark.parametrize("name, value, message", [
    ("SUSTAINLAB_COUNTRY", "XYZ", "Unknown SUSTAINLAB_COUNTRY 'XYZ'"),
    ("SUSTAINLAB_PUE", "0.9", "SUSTAINLAB_PUE must be >= 1.0"),
    ("SUSTAINLAB_PUE", "cheap", "SUSTAINLAB_PUE must be a number >= 1"),
])
def test_bad_environment_is_named_in_the_error(no_location, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        measure("x")


# -- FLOPs ---------------------------------------------------------------------------------------------------------


def test_training_flops_matches_an_independent_count():
    # torch's FlopCounterMode counts the matmuls of one forward + backward pass (biases and ReLU aside); with the
    # input requiring a gradient, every layer computes both gradients, the textbook 2 + 4 FLOPs per weight.
    from torch.utils.flop_counter import FlopCounterMode

    model = make_mlp((128,))
    X = torch.randn(50, 64, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(X), torch.zeros(50, dtype=torch.long)).backward()
    counted = counter.get_total_flops()
    assert energy.training_flops(model, 50) == pytest.approx(counted, rel=0.02)  # biases: 1.5 % of the parameters


# -- validation split, sealed test set, stopping every eval_every steps ---------------------------------------------


def test_split_validation_is_stratified_seeded_and_disjoint():
    X, y = torch.arange(200).float().unsqueeze(1), torch.tensor([0] * 150 + [1] * 50)
    X_fit, y_fit, X_val, y_val = energy.split_validation(X, y, fraction=0.2, random_state=3)
    assert len(y_val) == 40 and int(y_val.sum()) == 10, "stratified: the 3:1 class ratio is kept"
    assert not set(X_fit[:, 0].tolist()) & set(X_val[:, 0].tolist())
    again = energy.split_validation(X, y, fraction=0.2, random_state=3)
    assert torch.equal(again[2], X_val)


def _tiny_data():
    return energy.LeverData.digits()


def test_test_set_is_never_seen_before_the_final_evaluation():
    data = _tiny_data()
    sealed = data.sealed_test()
    with pytest.raises(RuntimeError, match="iterated before training stopped"):
        iter(sealed)
    steps_when_seen = []

    class Spy(energy.SealedData):
        def __iter__(self):
            steps_when_seen.append(history_steps())
            return super().__iter__()

    spy = Spy(sealed._data)
    model = make_mlp((16,))
    optimizer_steps = []

    def history_steps():
        return len(optimizer_steps)

    import sustainlab.optim as optim_module

    real_train = optim_module.train

    def recording_train(*args, **kwargs):
        history = real_train(*args, **kwargs)
        optimizer_steps.extend(range(history.optimizer_steps))
        return history

    try:
        optim_module.train = recording_train
        run = energy.train_to_target(model, make_loader(data.X_fit, data.y_fit, 32), data.val_loader(), spy,
                                     lr=1e-2, target_accuracy=0.9, eval_every=5, max_steps=400, device="cpu")
    finally:
        optim_module.train = real_train
    assert spy.times_iterated == 1, "evaluated on the test set exactly once"
    assert steps_when_seen == [run.steps], "and only after all training steps were made"
    assert run.reached_target and 0 < run.test_accuracy <= 1
    # Passing the sealed test set as validation data cannot go unnoticed.
    with pytest.raises(RuntimeError, match="iterated before training stopped"):
        energy.train_to_target(make_mlp((16,)), make_loader(data.X_fit, data.y_fit, 32), data.sealed_test(),
                               lr=1e-2, target_accuracy=0.9, eval_every=5, max_steps=20, device="cpu")


def test_stopping_rule_is_checked_every_eval_every_steps():
    data = _tiny_data()
    run = energy.train_to_target(make_mlp((32,)), make_loader(data.X_fit, data.y_fit, 32), data.val_loader(),
                                 lr=1e-2, target_accuracy=0.93, eval_every=7, max_steps=700, device="cpu")
    acc = run.history.eval_accuracy
    assert run.reached_target and run.steps % 7 == 0 and run.steps == 7 * len(acc)
    assert acc[-1] >= 0.93 and all(a < 0.93 for a in acc[:-1]), "stops at the first check that reaches the target"
    assert run.steps < 1077 / 32 * 7, "checked within epochs, not only at epoch ends"
    assert math.isnan(run.test_accuracy)
    full = energy.train_to_target(make_mlp((32,)), make_loader(data.X_fit, data.y_fit, 32), data.val_loader(),
                                  lr=1e-2, eval_every=10, max_steps=45, device="cpu")
    assert full.steps == 50 and not full.reached_target, "the budget rounds up to a multiple of eval_every"


def test_training_config_pairs_seeds_and_scales_checks_to_samples():
    data = _tiny_data()
    small = energy.training_config(data, hidden=(16,), batch_size=8, lr=1e-2, target_accuracy=0.9,
                                   check_every_samples=160, device="cpu")
    large = energy.training_config(data, hidden=(16,), batch_size=32, lr=1e-2, target_accuracy=0.9,
                                   check_every_samples=160, device="cpu")
    a0, a1, b0 = small(), small(), large()
    assert a0.eval_every == 20 and b0.eval_every == 5, "160 samples between checks whatever the batch size"
    assert a0.history.loss != a1.history.loss, "call k uses seed k"
    assert energy.training_config(data, hidden=(16,), batch_size=8, lr=1e-2, target_accuracy=0.9,
                                  check_every_samples=160, device="cpu")().history.loss == a0.history.loss
    best, table = energy.choose_lr(data, lrs=(1e-4, 1e-2), hidden=(16,), batch_size=32, target_accuracy=0.9,
                                   max_epochs=3, device="cpu")
    assert best == 1e-2 and list(table["lr"]) == [1e-4, 1e-2]
    assert table.set_index("lr").loc[1e-2, "samples"] < table.set_index("lr").loc[1e-4, "samples"]


def test_lever_table_and_plot_from_an_interleaved_comparison():
    import matplotlib

    matplotlib.use("Agg")
    from sustainlab.evidence import compare_interleaved

    data = _tiny_data()
    common = dict(hidden=(16,), lr=1e-2, target_accuracy=0.9, check_every_samples=160, device="cpu")
    comparison = compare_interleaved({
        "stop at target": energy.training_config(data, batch_size=32, **common),
        "fixed budget": energy.training_config(data, batch_size=32, **{**common, "target_accuracy": None,
                                                                     "max_epochs": 15}),
    }, repeats=5, energy=False, warmup=False)
    table = energy.lever_table(comparison)
    assert list(table.index) == ["stop at target", "fixed budget"]
    assert table.loc["stop at target", "reached target"] == "5/5"
    assert table.loc["fixed budget", "verdict"] == "no measurable difference on this machine", "no energy measured"
    ax = energy.plot_energy_vs_accuracy(comparison)
    assert ax.get_ylabel() == "test accuracy" and "energy" in ax.get_xlabel() and ax.get_title()


def test_int8_and_pruning_keep_a_working_model():
    data = _tiny_data()
    model = energy.training_config(data, hidden=(64,), lr=1e-2, max_epochs=3, device="cpu")().model.cpu()
    before = energy.accuracy(model, data.X_test, data.y_test)
    int8 = energy.quantize_int8(model)
    assert any("quantized" in type(m).__module__ for m in int8.modules())
    assert energy.model_bytes(int8) < energy.model_bytes(model) / 2
    assert energy.accuracy(int8, data.X_test, data.y_test) == pytest.approx(before, abs=0.03)
    pruned, sparsity = energy.prune_magnitude(model, 0.5)
    assert sparsity == pytest.approx(0.5, abs=0.01)
    assert not list(pruned.named_buffers()), "pruning made permanent (no masks left)"
    assert float(model[0].weight.detach().abs().min()) > 0, "the original model is untouched"
    assert energy.accuracy(pruned, data.X_test, data.y_test) > before - 0.1
    predict = energy.inference_config(model, data.X_test, predictions=1000)
    assert predict() == 3 * len(data.X_test)


MORE_BAD_INPUT = [
    (lambda: energy.split_validation(torch.zeros(10, 2), torch.zeros(10), fraction=0.0), ValueError,
     "fraction must be > 0"),
    (lambda: energy.split_validation(torch.zeros(10, 2), torch.zeros(10), fraction=1.0), ValueError,
     "fraction must be < 1"),
    (lambda: energy.split_validation(torch.zeros(10, 2), torch.zeros(9)), ValueError, "same length"),
    (lambda: energy.set_location("Atlantis"), ValueError, "Unknown country_iso_code 'Atlantis'"),
    (lambda: energy.set_location(pue=0.5), ValueError, "pue must be >= 1.0"),
    (lambda: energy.train_to_target(make_mlp((4,)), [], [], eval_every=0), ValueError, "eval_every must be >= 1"),
    (lambda: energy.train_to_target(make_mlp((4,)), [], [], target_accuracy=1.5), ValueError,
     "target_accuracy must be <= 1.0"),
    (lambda: energy.choose_lr(None, lrs=()), ValueError, "at least one learning rate"),
    (lambda: energy.choose_lr(None), ValueError, "needs target_accuracy"),
    (lambda: energy.prune_magnitude(make_mlp((4,)), 1.0), ValueError, "amount must be < 1.0"),
    (lambda: energy.inference_config(make_mlp((4,)), torch.zeros(0, 64)), ValueError, "at least one sample"),
]


@pytest.mark.parametrize("call, error, message", MORE_BAD_INPUT)
def test_more_bad_input_is_rejected_clearly(call, error, message, no_location):
    with pytest.raises(error, match=message):
        call()
