"""Tests for sustainlab.energy: measuring a block, published footprints, per-unit figures, distillation loss."""

from __future__ import annotations

import math
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from sustainlab import energy
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


# -- synthetic hourly intensity and the meter of the measure exercise ------------------------------------------------


def test_synthetic_hourly_intensity_is_seeded_positive_and_around_the_yearly_average():
    day = energy.synthetic_hourly_intensity(["FRA", "POL"], hours=72, seed=3)
    assert list(day.columns) == ["FRA", "POL"] and list(day.index) == list(range(72)) and day.index.name == "hour"
    assert (day > 0).all().all()
    assert day.equals(energy.synthetic_hourly_intensity(["FRA", "POL"], hours=72, seed=3))
    assert not day.equals(energy.synthetic_hourly_intensity(["FRA", "POL"], hours=72, seed=4))
    for code in day.columns:  # a daily cycle around the country's own figure, not another country's
        assert 0.3 < day[code].mean() / carbon_intensity(code) < 1.7
    assert day["FRA"].max() < day["POL"].min()


@pytest.mark.parametrize("call, message", [
    (lambda: energy.synthetic_hourly_intensity([]), "non-empty sequence"),
    (lambda: energy.synthetic_hourly_intensity("FRA"), "non-empty sequence"),
    (lambda: energy.synthetic_hourly_intensity(["FRA", "FRA"]), "must not repeat"),
    (lambda: energy.synthetic_hourly_intensity(["Atlantis"]), "Atlantis"),
    (lambda: energy.synthetic_hourly_intensity(["FRA"], hours=0), "hours must be >= 1"),
])
def test_synthetic_hourly_intensity_rejects_bad_input_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_measure_call_returns_the_blocks_energy_and_the_result():
    joules, result = energy.measure_call(lambda: _busy(0.05), label="busy")
    assert result > 0 and joules > 0 and math.isfinite(joules)
    with pytest.raises(TypeError, match="func must be a function"):
        energy.measure_call(3)


# -- the chapter's exercise checks (energy-1 … energy-4, energy-1-hidden) --------------------------------------------


def _chapter_notebook_check_cells():
    import nbformat
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "notebooks" / "05_energy.ipynb"
    nb = nbformat.read(path, as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code" and "sustainlab" in c.metadata]


def test_notebook_check_cells_headings_and_kinds_match_the_registry():
    """Each check cell names a registry exercise; its heading states the registry's kind and the cell's points."""
    import re

    from sustainlab.checks import registry

    nb, cells = _chapter_notebook_check_cells()
    meta = [c.metadata["sustainlab"] for c in cells]
    assert [m["check"] for m in meta if not m.get("hidden")] == ["energy-1", "energy-2", "energy-3", "energy-4"]
    assert [m["check"] for m in meta if m.get("hidden")] == ["energy-1-hidden"]
    hidden_at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("sustainlab", {}).get("hidden"))
    assert nb.cells[hidden_at - 1].metadata["sustainlab"]["check"] == "energy-1", "the hidden check follows energy-1"
    assert registry()["energy-1-hidden"].hidden and registry()["energy-1-hidden"].answer == "footprint_kg"
    headings = {m.group(1): (m.group(2), int(m.group(3)))
                for c in nb.cells if c.cell_type == "markdown"
                for m in re.finditer(r"^### Exercise (\S+) \((\w+), (\d+) points?\)$", c.source, re.M)}
    for m in meta:
        if not m.get("hidden"):
            assert headings[m["check"]] == (registry()[m["check"]].kind, m["points"]), m["check"]
    answers = [c.metadata["sustainlab"] for c in nb.cells if c.cell_type == "markdown" and "sustainlab" in c.metadata]
    assert [(a["answer"], a["points"], bool(a["rubric"])) for a in answers] == [("energy-w1", 2, True)]


def test_questionnaire_has_five_to_ten_questions_with_one_answer_each():
    nb, _ = _chapter_notebook_check_cells()
    at = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Questionnaire"))
    questions = [line for line in nb.cells[at].source.splitlines() if line.startswith("- ")]
    answers_cell = nb.cells[at + 1]
    assert answers_cell.source.startswith("def questionnaire_answers():")
    assert "### BEGIN SOLUTION" in answers_cell.source and "### END SOLUTION" in answers_cell.source
    namespace = {}
    exec(answers_cell.source, namespace)
    assert 5 <= len(questions) <= 10 and len(namespace["questionnaire_answers"]()) == len(questions)
    assert nb.cells[at + 2].source.startswith("## Further research")


@pytest.mark.parametrize("exercise_id", ["energy-1", "energy-2", "energy-3", "energy-4", "energy-1-hidden"])
def test_chapter_checks_accept_the_reference_and_give_each_wrong_answer_a_real_hint(exercise_id):
    from sustainlab.checks import get_exercise
    from sustainlab.checks._core import run_check

    exercise = get_exercise(exercise_id)
    for seed in (0, 1, 2):  # the public seed and two grading seeds
        assert run_check(exercise, exercise.reference(), seed) == (True, "")
    hints = [run_check(exercise, wrong())[1] for wrong in exercise.wrong if "delegating" not in wrong.__name__]
    assert all(hints) and len(set(hints)) >= 3
    assert not any("Error" in hint for hint in hints if "raised ValueError for phases" not in hint)


def test_footprint_delegating_answer_fails_only_because_the_package_is_unavailable(monkeypatch):
    """energy-1's delegating answer is otherwise right: blocking estimate_footprint is what fails it (not vacuous)."""
    import contextlib

    from sustainlab.checks import energy as chapter_checks
    from sustainlab.checks import get_exercise
    from sustainlab.checks._core import run_check

    answer = chapter_checks._wrong_delegating_footprint()
    passed, hint = run_check(get_exercise("energy-1"), answer)
    assert not passed and "not available during this check" in hint
    assert estimate_footprint(hours=1, n_devices=1, device_power_w=1000, carbon_intensity_kg_per_kwh=1).energy_kwh == 1
    monkeypatch.setattr(chapter_checks, "_unavailable", lambda *functions: contextlib.nullcontext())
    assert run_check(get_exercise("energy-1"), answer) == (True, "")


@pytest.mark.parametrize("exercise_id, wrong, words", [
    ("energy-2", "_wrong_delegating_greenest_grid", "PUE"),
    ("energy-3", "_wrong_delegating_yearly_average", "yearly average"),
    ("energy-4", "_wrong_delegating_compare_interleaved", "got Comparison"),
    ("energy-4", "_wrong_delegating_energy_ratios", "per 1,000 predictions"),
])
def test_delegating_answers_fail_where_the_package_does_not_apply(exercise_id, wrong, words):
    """The package ranks grids, averages a year, measures raw runs: each answer built on it alone misses the point."""
    from sustainlab.checks import energy as chapter_checks
    from sustainlab.checks import get_exercise
    from sustainlab.checks._core import run_check

    passed, hint = run_check(get_exercise(exercise_id), getattr(chapter_checks, wrong)())
    assert not passed and words in hint


def _footprint_for_the_visible_check_only(phases, n_gpus, pue, grid_g_per_kwh):
    """Right for lists of pairs and at least one GPU (all that energy-1 shows), wrong for arrays and zero GPUs."""
    if not phases:
        return 0.0
    return sum(h * w for h, w in phases) / 1000 * max(n_gpus, 1) * pue * grid_g_per_kwh / 1000


@pytest.mark.parametrize("answer, words", [
    ("_wrong_footprint_truthiness", "raised ValueError for phases given as a NumPy array"),
    ("_wrong_footprint_whole_hours", "fractions of an hour were dropped"),
    ("_wrong_footprint_at_least_one_gpu", "on zero GPUs nothing runs"),
    ("_wrong_footprint_tailored", "tailored to the visible check"),
])
def test_hidden_check_says_what_it_caught(answer, words):
    from sustainlab.checks import energy as chapter_checks
    from sustainlab.checks import get_exercise
    from sustainlab.checks._core import run_check

    passed, hint = run_check(get_exercise("energy-1-hidden"), getattr(chapter_checks, answer)())
    assert not passed and words in hint


def test_hidden_check_catches_an_answer_that_passes_the_visible_check(capsys):
    from sustainlab.checks import check

    check("energy-1", _footprint_for_the_visible_check_only)
    assert capsys.readouterr().out == "✔ energy-1 passed\n"
    _, cells = _chapter_notebook_check_cells()
    (cell,) = [c for c in cells if c.metadata["sustainlab"]["check"] == "energy-1-hidden"]
    exec(cell.source, {"footprint_kg": _footprint_for_the_visible_check_only})
    assert capsys.readouterr().out.startswith("✘ energy-1-hidden: ")


def test_measure_check_needs_the_meters_figures_interleaved_and_normalised():
    """energy-4 is checked structurally: the scripted meter's joules show the order of the runs and the scaling."""
    from sustainlab.checks import energy as chapter_checks

    scenario, repeats = chapter_checks._METER_SCENARIOS[0]
    models, meter = chapter_checks._scripted_models(scenario)
    got = chapter_checks._reference_per_1000()(models, repeats, meter)
    teacher, student = (got["per_1000"][n] for n in scenario)
    assert all(s < t for s, t in zip(student, teacher)), "the student is cheaper per prediction"
    assert got["verdict"] == "cheaper"
    models, meter = chapter_checks._scripted_models(scenario)
    assert meter(models["student"])[0] > meter(models["teacher"])[0], "though dearer per run"
    with pytest.raises(ValueError, match="one of the models' functions"):
        meter(lambda: 3)


def test_hints_do_not_give_the_formula():
    """A hint says where to look, never the expression that solves the exercise."""
    import ast
    import inspect

    from sustainlab.checks import energy as chapter_checks

    tree = ast.parse(inspect.getsource(chapter_checks))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    strings = " ".join(node.value for node in ast.walk(tree)
                       if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings)
    assert "not interleaved" in strings and "PUE" in strings  # the hints are there
    for expression in ["* pue", "× PUE", "× grid", "/ 1000", "multipl", "hours * watts", "joules / predictions",
                       "convolve", "energy × PUE", "sum("]:
        assert expression not in strings, expression
