"""The Monitor aggregate: one per model name, counting drift alerts (no database)."""

from __future__ import annotations

from domain.monitor import Monitor

SYSTEM = "system"


def _detect(monitor: Monitor, retraining_run_id: str | None = None) -> None:
    monitor.detect(
        model_name="credit",
        model_version_id="version-1",
        number=1,
        window={"predictions": 200, "from_position": 10, "to_position": 400, "skipped_erased": 0},
        drifted_features=["income"],
        statistics={"income": {"psi": 0.4, "drifted": True}},
        thresholds={"psi": 0.2},
        retraining_run_id=retraining_run_id,
        actor=SYSTEM,
    )


def test_a_model_name_has_one_monitor() -> None:
    assert Monitor(model_name="credit", actor=SYSTEM).id == Monitor.create_id(model_name="credit")


def test_a_new_monitor_has_raised_no_alert() -> None:
    monitor = Monitor(model_name="credit", actor=SYSTEM)

    assert (monitor.model_name, monitor.alerts) == ("credit", 0)


def test_each_drift_detected_is_counted_as_an_alert() -> None:
    monitor = Monitor(model_name="credit", actor=SYSTEM)

    _detect(monitor)
    _detect(monitor, retraining_run_id="run-9")

    assert monitor.alerts == 2


def test_a_drift_alert_records_the_window_and_the_retraining_it_requested() -> None:
    monitor = Monitor(model_name="credit", actor=SYSTEM)
    monitor.collect_events()

    _detect(monitor, retraining_run_id="run-9")

    (alert,) = monitor.collect_events()
    assert isinstance(alert, Monitor.DriftDetected)
    assert (alert.window["to_position"], alert.drifted_features, alert.retraining_run_id) == (400, ["income"], "run-9")
