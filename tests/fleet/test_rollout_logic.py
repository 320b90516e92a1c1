"""The rollout controller's pure logic: batches, gates, the state machine, resumable state.

The devices here are the controller's inputs (acknowledgements, shadow reports, availability) written by
hand: this module does no I/O, so its every branch can be driven without a broker or an agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.errors import EdgeError
from edge.fleet import rollout as rollout_mod
from edge.fleet.rollout import (
    EXIT_INCOMPLETE,
    EXIT_PROMOTED,
    EXIT_ROLLED_BACK,
    Action,
    Gates,
    Rollout,
    ShadowReport,
    plan_batches,
)
from tests.support.process import run_module

NEW, OLD = "n" * 64, "o" * 64


def report(
    dev: str, inputs: int = 100, agreement: float = 0.98, errors: int = 0, p99: float = 10.0
) -> ShadowReport:
    return ShadowReport(dev, NEW, inputs, agreement, errors, p99, 9.0)


def test_plan_batches() -> None:
    devs = ["d5", "d0", "d1", "d2", "d3", "d4", "d0"]
    assert plan_batches(devs, canary=1, batch=2) == [["d0"], ["d1", "d2"], ["d3", "d4"], ["d5"]]
    assert plan_batches(["a", "b"], canary=5, batch=2) == [["a", "b"]]
    with pytest.raises(EdgeError, match="--canary"):
        plan_batches(devs, canary=0, batch=2)
    with pytest.raises(EdgeError, match="--batch"):
        plan_batches(devs, canary=1, batch=0)
    with pytest.raises(EdgeError, match="no devices"):
        plan_batches([], canary=1, batch=1)


def test_gates_weighted_agreement_error_rate_worst_p99() -> None:
    gates = Gates(min_agreement=0.9, max_error_rate=0.02, max_p99_ms=20, min_inputs=50)
    # 300 inputs at 0.95 and 100 at 0.75: weighted 0.90 (an unweighted mean would say 0.85)
    v = gates.check([report("a", 300, 0.95, 3, 12.0), report("b", 100, 0.75, 1, 18.0)])
    assert v.passed is True and v.reasons == ()
    assert v.figures["agreement"] == pytest.approx(0.9) and v.figures["error_rate"] == pytest.approx(0.01)
    assert v.figures["candidate_p99_ms"] == 18.0 and v.figures["devices"] == ["a", "b"]
    bad = gates.check([report("a", 100, 0.5, 10, 25.0)])
    assert bad.passed is False and len(bad.reasons) == 3
    assert "agreement 0.500 < 0.9" in bad.reasons[0] and "error rate 0.100" in bad.reasons[1]
    assert "p99 25.0 ms > 20 ms" in bad.reasons[2]
    few = gates.check([report("a", 10)])
    assert few.passed is None and "10 inputs so far, 50 needed" in few.reasons[0]
    with pytest.raises(EdgeError, match="--min-agreement"):
        Gates(min_agreement=1.5)
    with pytest.raises(EdgeError, match="--max-p99-ms"):
        Gates(max_p99_ms=0)


def test_shadow_report_from_message() -> None:
    msg = {
        "candidate_sha256": NEW,
        "active_sha256": OLD,
        "inputs": 40,
        "agreement": 0.975,
        "latency_ms": {"active": {"p50": 4, "p99": 9}, "candidate": {"p50": 5, "p99": 11}},
        "errors": 1,
    }
    assert ShadowReport.from_message("d0", msg) == ShadowReport("d0", NEW, 40, 0.975, 1, 11, 9)


class Driver:
    """Plays the devices: acknowledges every action (unless told otherwise) and reports windows."""

    def __init__(self, rollout: Rollout, agreement: dict[str, float] | None = None) -> None:
        self.r = rollout
        self.now = 0.0
        self.sent: list[Action] = []
        self.agreement = agreement or {}
        self.online: dict[str, bool] = {}
        self.silent: set[str] = set()
        self.refuse: dict[tuple[str, str], str] = {}

    def run(self, limit: int = 500) -> int:
        for _ in range(limit):
            actions = self.r.step(self.now, self.online)
            self.sent += actions
            for a in actions:
                if a.device in self.silent:
                    continue
                why = self.refuse.get((a.kind, a.device))
                self.r.on_ack(a.device, a.kind, why is None, self.now, why)
            for dev, rec in self.r.devices.items():
                if rec.state == "shadow":
                    self.r.on_report(report(dev, agreement=self.agreement.get(dev, 0.99)))
            if self.r.exit_code() is not None:
                return self.r.exit_code()  # type: ignore[return-value]
            self.now += 10.0
        raise AssertionError(f"no end after {limit} steps: {self.r.summary()}")

    def kinds(self, dev: str) -> list[str]:
        return [a.kind for a in self.sent if a.device == dev]


def new_rollout(n: int = 5, **kw: Any) -> Rollout:
    return Rollout.plan(
        model_sha256=NEW,
        devices={f"d{i}": OLD for i in range(n)},
        gates=kw.pop("gates", Gates(min_agreement=0.9, max_error_rate=0.05, max_p99_ms=50)),
        canary=kw.pop("canary", 1),
        batch=kw.pop("batch", 2),
        window_s=kw.pop("window_s", 30.0),
        **kw,
    )


def test_promotes_batch_by_batch_each_shadow_checked() -> None:
    d = Driver(new_rollout())
    assert d.run() == EXIT_PROMOTED
    assert all(rec.state == "active" for rec in d.r.devices.values())
    for dev in d.r.devices:
        assert d.kinds(dev) == ["shadow", "activate"]
    # nobody outside the canary heard anything before the canary was activated
    first_other = min(i for i, a in enumerate(d.sent) if a.device != "d0")
    assert [a.kind for a in d.sent[:first_other]] == ["shadow", "activate"]
    assert [v["batch"] for v in d.r.verdicts] == [0, 1, 2] and all(v["passed"] for v in d.r.verdicts)
    assert d.r.summary()["devices"] == {"active": 5} and d.r.summary()["exit_code"] == 0


def test_without_shadow_batches_only_the_canary_is_shadowed() -> None:
    d = Driver(new_rollout(shadow_batches=False))
    assert d.run() == EXIT_PROMOTED
    assert d.kinds("d0") == ["shadow", "activate"]
    assert all(d.kinds(f"d{i}") == ["install"] for i in range(1, 5))


def test_canary_failing_agreement_is_dropped_and_nobody_else_touched() -> None:
    d = Driver(new_rollout(), agreement={"d0": 0.3})
    assert d.run() == EXIT_ROLLED_BACK
    assert d.kinds("d0") == ["shadow", "drop"]
    assert {a.device for a in d.sent} == {"d0"}
    assert "agreement 0.300 < 0.9" in str(d.r.reason) and d.r.devices["d0"].state == "dropped"
    assert d.r.verdicts[-1]["passed"] is False


def test_later_batch_failing_rolls_back_the_activated_ones() -> None:
    d = Driver(new_rollout(), agreement={"d3": 0.2, "d4": 0.2})  # batch 2 = d3, d4
    assert d.run() == EXIT_ROLLED_BACK
    assert d.kinds("d3") == ["shadow", "drop"] and d.kinds("d4") == ["shadow", "drop"]
    for dev in ("d0", "d1", "d2"):
        assert d.kinds(dev) == ["shadow", "activate", "rollback"]
        assert [a.sha256 for a in d.sent if a.device == dev and a.kind == "rollback"] == [OLD]
        assert d.r.devices[dev].state == "rolled_back"
    assert d.r.devices["d3"].state == "dropped"


def test_a_refused_candidate_stops_the_rollout() -> None:
    d = Driver(new_rollout())
    d.refuse[("shadow", "d0")] = "guard: the model crashed the interpreter"
    assert d.run() == EXIT_ROLLED_BACK
    assert d.kinds("d0") == ["shadow"] and d.r.devices["d0"].state == "failed"
    assert "d0 refused shadow: guard" in str(d.r.reason)


def test_offline_device_is_retried_and_never_blocks_the_rest() -> None:
    d = Driver(new_rollout(max_attempts=2))
    d.online["d1"] = False
    assert d.run() == EXIT_INCOMPLETE
    assert d.r.devices["d1"].state == "offline" and d.kinds("d1") == []
    assert all(d.r.devices[x].state == "active" for x in ("d0", "d2", "d3", "d4"))
    assert "d1" in str(d.r.reason)


def test_offline_device_that_comes_back_is_promoted_in_the_retry_batch() -> None:
    d = Driver(new_rollout())
    d.online["d1"] = False
    r = d.r
    for _ in range(200):
        d.sent += (acts := r.step(d.now, d.online))
        for a in acts:
            r.on_ack(a.device, a.kind, True, d.now)
        for dev, rec in r.devices.items():
            if rec.state == "shadow":
                r.on_report(report(dev))
        if all(r.devices[x].state == "active" for x in ("d0", "d2", "d3", "d4")):
            d.online["d1"] = True  # back before the retry batch
        if r.exit_code() is not None:
            break
        d.now += 10
    assert r.exit_code() == EXIT_PROMOTED and d.kinds("d1") == ["shadow", "activate"]
    assert r.batches[-1] == ["d1"]


def test_a_retry_batch_waits_for_its_offline_device_instead_of_spending_every_attempt_at_once() -> None:
    d = Driver(new_rollout())  # 3 batches, --ack-timeout 60 s
    d.online["d1"] = False
    r, retry_at = d.r, None
    for _ in range(200):
        d.sent += (acts := r.step(d.now, d.online))
        for a in acts:
            r.on_ack(a.device, a.kind, True, d.now)
        for dev, rec in r.devices.items():
            if rec.state == "shadow":
                r.on_report(report(dev))
        if retry_at is None and len(r.batches) > 3:
            retry_at = d.now
        if retry_at is not None and d.now - retry_at >= 30:
            d.online["d1"] = True  # a short outage: back 30 s into the retry
        if r.exit_code() is not None:
            break
        d.now += 10.0
    assert r.exit_code() == EXIT_PROMOTED, r.events
    assert d.kinds("d1") == ["shadow", "activate"], r.events
    assert sum("d1: offline" in e for e in r.events) == 1, r.events  # only the first batch missed it

    gone = Driver(new_rollout())  # never back: each retry waited --ack-timeout (60 s), then given up
    gone.online["d1"] = False
    assert gone.run() == EXIT_INCOMPLETE
    tries = [float(e.split()[0]) for e in gone.r.events if e.split()[1] == "d1:"]
    assert len(tries) == 3 and tries[2] - tries[0] >= 2 * 60.0, gone.r.events  # each attempt waited


def test_silent_device_times_out_like_an_offline_one() -> None:
    d = Driver(new_rollout(max_attempts=2))
    d.silent.add("d2")
    assert d.run() == EXIT_INCOMPLETE
    assert d.kinds("d2") == ["shadow", "shadow"]  # sent, no answer; retried once; then given up
    assert d.r.devices["d2"].state == "offline"


def test_too_little_traffic_fails_after_max_windows() -> None:
    r = new_rollout(gates=Gates(min_inputs=1000))
    d = Driver(r)
    assert d.run() == EXIT_ROLLED_BACK
    assert "not enough live traffic" in str(r.reason) and len(r.verdicts) == r.max_windows


def test_state_round_trips_and_a_resumed_run_ends_the_same() -> None:
    d = Driver(new_rollout(), agreement={"d3": 0.2})
    for _ in range(12):  # part way: the canary and batch 1 done
        d.sent += (acts := d.r.step(d.now))
        for a in acts:
            d.r.on_ack(a.device, a.kind, True, d.now)
        for dev, rec in d.r.devices.items():
            if rec.state == "shadow":
                d.r.on_report(report(dev, agreement=d.agreement.get(dev, 0.99)))
        d.now += 10
    saved = json.dumps(d.r.to_json())
    resumed = Rollout.from_json(json.loads(saved))
    assert resumed.to_json() == d.r.to_json()
    d2 = Driver(resumed, agreement={"d3": 0.2})
    d2.now = d.now
    assert d2.run() == EXIT_ROLLED_BACK
    assert d.run() == EXIT_ROLLED_BACK
    assert d2.r.to_json() == d.r.to_json()
    with pytest.raises(EdgeError, match="state version"):
        Rollout.from_json({**json.loads(saved), "state_version": 99})


def test_rerun_is_idempotent_same_id_and_nothing_sent_to_promoted_devices() -> None:
    a, b = new_rollout(), new_rollout()
    assert a.rollout_id == b.rollout_id and len(a.rollout_id) == 12
    assert new_rollout(window_s=60).rollout_id != a.rollout_id
    done = Rollout.plan(
        model_sha256=NEW,
        devices={"d0": NEW, "d1": NEW, "d2": OLD},
        gates=Gates(),
        canary=1,
        batch=5,
        window_s=30,
    )
    d = Driver(done)
    assert d.run() == EXIT_PROMOTED
    assert {a.device for a in d.sent} == {"d2"}


def test_unconfirmed_rollback_is_reported_not_waited_for_forever() -> None:
    d = Driver(new_rollout(max_attempts=2), agreement={"d1": 0.1, "d2": 0.1})
    d.refuse = {}
    r = d.r
    # the canary d0 is activated, then goes silent: its rollback is never confirmed
    for _ in range(300):
        acts = r.step(d.now, d.online)
        d.sent += acts
        for a in acts:
            if a.kind == "rollback" and a.device == "d0":
                continue
            r.on_ack(a.device, a.kind, True, d.now)
        for dev, rec in r.devices.items():
            if rec.state == "shadow":
                r.on_report(report(dev, agreement=d.agreement.get(dev, 0.99)))
        if r.exit_code() is not None:
            break
        d.now += 30
    assert r.exit_code() == EXIT_ROLLED_BACK
    assert r.devices["d0"].state == "unreachable" and "rollback" in str(r.devices["d0"].error)
    assert d.kinds("d0") == ["shadow", "activate", "rollback", "rollback"]


def test_offline_canary_means_the_next_batch_is_checked_in_its_place() -> None:
    d = Driver(new_rollout(shadow_batches=False, max_attempts=1))
    d.online["d0"] = False
    assert d.run() == EXIT_INCOMPLETE
    assert d.kinds("d1") == ["shadow", "activate"] and d.kinds("d2") == ["shadow", "activate"]
    assert d.kinds("d3") == ["install"] and d.kinds("d0") == []


def test_a_device_that_never_answered_gets_a_drop_on_failure() -> None:
    d = Driver(new_rollout(), agreement={"d1": 0.1})
    d.silent.add("d2")  # batch 1 = d1, d2: d2 may have loaded the candidate without saying so
    assert d.run() == EXIT_ROLLED_BACK
    assert d.kinds("d2")[:2] == ["shadow", "drop"] and d.kinds("d1") == ["shadow", "drop"]
    assert d.r.devices["d2"].state == "unreachable"


def test_state_file_and_edge_fleet_status(tmp_path: Path) -> None:
    d = Driver(new_rollout(), agreement={"d0": 0.3})
    assert d.run() == EXIT_ROLLED_BACK
    path = rollout_mod.save(d.r, tmp_path)
    assert path.name == f"{d.r.rollout_id}.json" and not list(tmp_path.glob("*.tmp"))
    assert rollout_mod.load(d.r.rollout_id, tmp_path).to_json() == d.r.to_json()
    done = run_module("edge.fleet", "status", d.r.rollout_id, "--state-dir", str(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "phase rolled_back" in done.stdout and "agreement 0.300 < 0.9" in done.stdout
    assert "1 dropped, 4 pending" in done.stdout and "FAILED" in done.stdout
    js = run_module(
        "edge.fleet", "status", d.r.rollout_id, "--state-dir", str(tmp_path), "--json", timeout=60
    )
    assert json.loads(js.stdout)["exit_code"] == EXIT_ROLLED_BACK
    missing = run_module("edge.fleet", "status", "nope", "--state-dir", str(tmp_path), timeout=60)
    assert missing.returncode == 2 and d.r.rollout_id in missing.stderr  # the known ids are listed


def test_resume_reads_in_flight_answers_from_the_status_and_resends_the_rest() -> None:
    r = new_rollout(batch=4)  # canary d0, then d1..d4
    d = Driver(r)
    d.r.step(0.0)  # shadow sent to the canary; the run is killed before any answer
    assert r.devices["d0"].state == "shadowing" and r.devices["d0"].attempts == 1
    copy = Rollout.from_json(json.loads(json.dumps(r.to_json())))
    # its status says it shadows the candidate: the lost answer counts as an acknowledgement
    copy.resume(5.0, {"d0": (OLD, NEW)})
    assert copy.devices["d0"].state == "shadow" and copy.devices["d0"].sent_at is None
    # nothing in its status: the shadow is sent again, and the unanswered send does not count
    again = Rollout.from_json(json.loads(json.dumps(r.to_json())))
    again.resume(5.0, {"d0": (OLD, None)})
    assert again.devices["d0"].state == "pending" and again.devices["d0"].attempts == 0
    assert [a.kind for a in again.step(6.0)] == ["shadow"]
    # an activation that happened while no run listened
    d2 = Driver(new_rollout(batch=4))
    for _ in range(10):
        acts = d2.r.step(d2.now)
        for a in acts:
            if a.kind != "activate":
                d2.r.on_ack(a.device, a.kind, True, d2.now)
        if d2.r.devices["d0"].state == "shadow":
            d2.r.on_report(report("d0"))
        if d2.r.devices["d0"].state == "activating":
            break
        d2.now += 10
    assert d2.r.devices["d0"].state == "activating"
    d2.r.resume(d2.now, {"d0": (NEW, None)})
    assert d2.r.devices["d0"].state == "active"
    assert Driver(d2.r).run() == EXIT_PROMOTED


def test_resuming_an_incomplete_rollout_retries_its_offline_devices() -> None:
    d = Driver(new_rollout(max_attempts=1))
    d.online["d1"] = False
    assert d.run() == EXIT_INCOMPLETE and d.r.devices["d1"].state == "offline"
    d.r.resume(d.now, {"d1": (OLD, None)})
    assert d.r.phase == "running" and d.r.batches[-1] == ["d1"] and d.r.devices["d1"].state == "pending"
    d.online["d1"] = True
    assert d.run() == EXIT_PROMOTED and d.kinds("d1") == ["shadow", "activate"]
    # a device that got the model some other way meanwhile is simply counted done
    e = Driver(new_rollout(max_attempts=1))
    e.online["d2"] = False
    assert e.run() == EXIT_INCOMPLETE
    e.r.resume(e.now, {"d2": (NEW, None)})
    assert e.r.devices["d2"].state == "active" and e.run() == EXIT_PROMOTED and e.kinds("d2") == []


def test_a_device_that_lost_its_candidate_is_shadowed_again_not_a_failure() -> None:
    d = Driver(new_rollout())
    d.refuse[("activate", "d1")] = "no_candidate: no candidate with sha256 nnnn is shadowing here"
    r = d.r
    for _ in range(200):  # d1 restarts during its window: its activate is refused once
        d.sent += (acts := r.step(d.now, d.online))
        for a in acts:
            why = d.refuse.pop((a.kind, a.device), None)
            r.on_ack(a.device, a.kind, why is None, d.now, why)
        for dev, rec in r.devices.items():
            if rec.state == "shadow":
                r.on_report(report(dev))
        if r.exit_code() is not None:
            break
        d.now += 10
    assert r.exit_code() == EXIT_PROMOTED and r.batches[-1] == ["d1"]
    assert d.kinds("d1") == ["shadow", "activate", "shadow", "activate"]
    assert all(d.kinds(x) == ["shadow", "activate"] for x in ("d0", "d2", "d3", "d4"))
