"""The staged-rollout controller's logic: plan, gates, state machine and resumable state. No I/O here.

A rollout puts one candidate model (by sha256) on a set of devices in batches: first ``canary`` devices,
then ``batch`` at a time. Each batch is shadow-checked (the agent runs the candidate beside the active
model on live inputs and reports windows on ``edge/<device>/shadow``); when the batch's figures pass the
:class:`Gates` it is activated (``stage: "activate"``, naming the sha256) and the next batch starts.
Any failure (a gate, a device refusing the candidate) stops the rollout: the candidate is dropped where it
is shadowing and the previous model is put back where it was activated, and the exit code is 3.

The controller is driven from outside: :meth:`Rollout.step` says what to send now (a list of
:class:`Action`), and ``on_ack`` / ``on_report`` / ``on_availability`` feed what the devices answered.
The MQTT side (signing, sending, subscribing) lives elsewhere; so this module can be tested exhaustively,
and the state (``to_json`` / ``from_json``) is all a resumed run needs.

Device states: pending -> shadowing (sent) -> shadow (running, acknowledged) -> activating -> active;
failure: shadowing/shadow -> dropping -> dropped, active -> rolling_back -> rolled_back (``unreachable``
when a device never confirms). A device that is offline or does not answer is ``deferred``: the rest
goes on, and it gets a retry batch of its own at the end while it has attempts left (``max_attempts``);
then it is reported ``offline`` and the exit code is 4: re-running the same command resumes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

EXIT_PROMOTED, EXIT_BAD_INPUT, EXIT_ROLLED_BACK, EXIT_INCOMPLETE = 0, 2, 3, 4
STATE_VERSION = 1


@dataclass(frozen=True)
class ShadowReport:
    """One window of ``edge/<device>/shadow`` (issue 15's message), reduced to what the gates read."""

    device: str
    candidate_sha256: str
    inputs: int
    agreement: float | None  # 0..1; None when the window had no input
    errors: int  # candidate failures in the window
    candidate_p99_ms: float | None
    active_p99_ms: float | None = None

    @classmethod
    def from_message(cls, device: str, payload: Mapping[str, Any]) -> ShadowReport:
        lat = payload.get("latency_ms") or {}
        return cls(
            device=device,
            candidate_sha256=str(payload["candidate_sha256"]),
            inputs=int(payload["inputs"]),
            agreement=None if payload.get("agreement") is None else float(payload["agreement"]),
            errors=int(payload.get("errors") or 0),
            candidate_p99_ms=(lat.get("candidate") or {}).get("p99"),
            active_p99_ms=(lat.get("active") or {}).get("p99"),
        )


@dataclass(frozen=True)
class Verdict:
    passed: bool | None  # None: not enough inputs yet to say
    reasons: tuple[str, ...]
    figures: dict[str, Any]


@dataclass(frozen=True)
class Gates:
    min_agreement: float = 0.9
    max_error_rate: float = 0.01
    max_p99_ms: float | None = None
    min_inputs: int = 20  # per batch: fewer and a window says nothing

    def __post_init__(self) -> None:
        if not 0 <= self.min_agreement <= 1:
            raise EdgeError(
                f"--min-agreement must be in 0..1, got {self.min_agreement}", "e.g. --min-agreement 0.9"
            )
        if not 0 <= self.max_error_rate <= 1:
            raise EdgeError(
                f"--max-error-rate must be in 0..1, got {self.max_error_rate}", "e.g. --max-error-rate 0.01"
            )
        if self.max_p99_ms is not None and self.max_p99_ms <= 0:
            raise EdgeError(f"--max-p99-ms must be > 0, got {self.max_p99_ms}", "e.g. --max-p99-ms 50")
        if self.min_inputs < 1:
            raise EdgeError(f"the minimum inputs per window must be >= 1, got {self.min_inputs}", "e.g. 20")

    def check(self, reports: Iterable[ShadowReport]) -> Verdict:
        """The batch's figures against the gates. Agreement is weighted by each device's inputs (a busy
        device counts for more); p99 is the worst device's (a latency gate protects every device)."""
        rows = list(reports)
        inputs = sum(r.inputs for r in rows)
        scored = [(r.agreement, r.inputs) for r in rows if r.agreement is not None and r.inputs > 0]
        weight = sum(n for _, n in scored)
        agreement = sum(a * n for a, n in scored) / weight if weight else None
        errors = sum(r.errors for r in rows)
        error_rate = errors / inputs if inputs else None
        p99s = [r.candidate_p99_ms for r in rows if r.candidate_p99_ms is not None]
        p99 = max(p99s) if p99s else None
        figures = {
            "devices": sorted(r.device for r in rows),
            "inputs": inputs,
            "agreement": None if agreement is None else round(agreement, 6),
            "errors": errors,
            "error_rate": None if error_rate is None else round(error_rate, 6),
            "candidate_p99_ms": p99,
        }
        if inputs < self.min_inputs or agreement is None:
            return Verdict(None, (f"{inputs} inputs so far, {self.min_inputs} needed",), figures)
        reasons = []
        if agreement < self.min_agreement:
            reasons.append(f"agreement {agreement:.3f} < {self.min_agreement:g}")
        if error_rate is not None and error_rate > self.max_error_rate:
            reasons.append(f"error rate {error_rate:.3f} > {self.max_error_rate:g} ({errors} of {inputs})")
        if self.max_p99_ms is not None and (p99 is None or p99 > self.max_p99_ms):
            reasons.append(f"candidate p99 {p99} ms > {self.max_p99_ms:g} ms")
        return Verdict(not reasons, tuple(reasons), figures)


def plan_batches(devices: Sequence[str], canary: int, batch: int) -> list[list[str]]:
    """Canaries first, then batches of ``batch``; devices in sorted order, so a re-run plans the same."""
    if canary < 1:
        raise EdgeError(f"--canary must be at least 1, got {canary}", "e.g. --canary 1")
    if batch < 1:
        raise EdgeError(f"--batch must be at least 1, got {batch}", "e.g. --batch 10")
    ordered = sorted(set(devices))
    if not ordered:
        raise EdgeError("no devices matched --devices", "check the ids or glob against edge-fleet ls")
    out = [ordered[:canary]]
    rest = ordered[canary:]
    out += [rest[i : i + batch] for i in range(0, len(rest), batch)]
    return out


@dataclass(frozen=True)
class Action:
    """Something to send to one device: ``shadow`` (the signed candidate, stage shadow), ``install``
    (the signed candidate straight in, for batches without a shadow check), ``activate`` / ``drop``
    (naming the candidate's sha256), ``rollback`` (activate ``sha256``, the device's previous model)."""

    kind: str
    device: str
    sha256: str


@dataclass
class DeviceRecord:
    state: str = "pending"
    previous_sha256: str | None = None
    previous_size: int | None = None  # what a rollback's activate names beside the sha256
    previous_version: str | None = None
    attempts: int = 0
    sent_at: float | None = None
    error: str | None = None
    undo_attempts: int = 0  # drops/rollbacks sent


@dataclass
class Rollout:
    rollout_id: str
    model_sha256: str
    gates: Gates
    batches: list[list[str]]
    window_s: float
    shadow_batches: bool = True
    max_attempts: int = 3
    ack_timeout_s: float = 60.0
    max_windows: int = 3  # windows to wait for enough inputs before the batch fails for lack of traffic
    version: str | None = None
    phase: str = "running"  # running | promoted | rolled_back | incomplete
    batch_index: int = 0
    batch_stage: str = "shadow"  # shadow | activate (for the current batch)
    window_started_at: float | None = None
    windows: int = 0
    retry_since: float | None = None  # when the current retry batch began: its offline devices are awaited
    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    reports: dict[str, ShadowReport] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    events: list[str] = field(default_factory=list)

    # --------------------------------------------------------------------------------- construction
    @classmethod
    def plan(
        cls,
        *,
        model_sha256: str,
        devices: Mapping[str, str | None],
        gates: Gates,
        canary: int,
        batch: int,
        window_s: float,
        shadow_batches: bool = True,
        version: str | None = None,
        max_attempts: int = 3,
    ) -> Rollout:
        """``devices``: id -> the sha256 it runs now (None when unknown). A device already on the
        candidate counts as done: re-running a finished rollout sends nothing."""
        if window_s <= 0:
            raise EdgeError(f"--window must be > 0 seconds, got {window_s}", "e.g. --window 300")
        batches = plan_batches(list(devices), canary, batch)
        key = json.dumps(
            [model_sha256, batches, asdict(gates), window_s, shadow_batches], sort_keys=True
        ).encode()
        r = cls(
            rollout_id=hashlib.sha256(key).hexdigest()[:12],
            model_sha256=model_sha256,
            gates=gates,
            batches=batches,
            window_s=window_s,
            shadow_batches=shadow_batches,
            version=version,
            max_attempts=max_attempts,
        )
        for dev, sha in devices.items():
            r.devices[dev] = DeviceRecord(
                state="active" if sha == model_sha256 else "pending", previous_sha256=sha
            )
        return r

    # --------------------------------------------------------------------------------- the machine
    @property
    def batch_number(self) -> int:
        """The batch in progress, 1-based, for people (the last one once the rollout has ended)."""
        return min(self.batch_index + 1, len(self.batches))

    def current(self) -> list[str]:
        return self.batches[self.batch_index] if self.batch_index < len(self.batches) else []

    def _log(self, now: float, text: str) -> None:
        self.events.append(f"{now:.3f} {text}")

    def step(self, now: float, online: Mapping[str, bool] | None = None) -> list[Action]:
        """What to send now. ``online``: device -> availability (missing: assume online)."""
        online = online or {}
        if self.phase not in ("running", "rolling_back"):
            return []
        self._expire(now)
        if self.phase == "rolling_back":
            return self._rollback_actions(now)
        actions: list[Action] = []
        while self.phase == "running" and self.batch_index < len(self.batches):
            batch = self.current()
            # without shadow batches, only until one batch passed its gates: if the canaries were all
            # offline, the next batch is checked in their place; nothing is installed unchecked
            shadowed = self.shadow_batches or not any(v["passed"] for v in self.verdicts)
            stage_kind = ("shadow" if shadowed else "install") if self.batch_stage == "shadow" else "activate"
            awaiting = False
            for dev in batch:
                rec = self.devices[dev]
                if rec.state != ("pending" if self.batch_stage == "shadow" else "shadow"):
                    continue
                if not online.get(dev, True):
                    if self.retry_since is not None and now - self.retry_since < self.ack_timeout_s:
                        # a retry batch waits up to --ack-timeout for its device to come back: retrying
                        # at once would spend every attempt in the same instant, on the same outage
                        awaiting = True
                        continue
                    self._defer(dev, now, "offline")
                    continue
                rec.state = {"shadow": "shadowing", "install": "activating", "activate": "activating"}[
                    stage_kind
                ]
                rec.sent_at = now
                rec.attempts += 1
                actions.append(Action(stage_kind, dev, self.model_sha256))
            if actions:
                return actions
            if awaiting or any(self.devices[d].state in ("shadowing", "activating") for d in batch):
                return []  # waiting for acknowledgements, or for offline devices of a retry batch
            if self.batch_stage == "shadow" and shadowed:
                live = [d for d in batch if self.devices[d].state == "shadow"]
                if live:
                    verdict = self._check_window(now, live)
                    if verdict is None:
                        return []  # window still open
                    if not verdict:
                        return self._rollback_actions(now)
                    self.batch_stage = "activate"
                    continue
            self._next_batch(now)
        if self.phase == "running":
            self._finish(now)
        return actions

    def _check_window(self, now: float, live: list[str]) -> bool | None:
        if self.window_started_at is None:
            self.window_started_at = now
            return None
        if now - self.window_started_at < self.window_s:
            return None
        reports = [
            self.reports[d]
            for d in live
            if d in self.reports and self.reports[d].candidate_sha256 == self.model_sha256
        ]
        verdict = self.gates.check(reports)
        self.windows += 1
        self.verdicts.append(
            {
                "batch": self.batch_index,
                "passed": verdict.passed,
                "reasons": list(verdict.reasons),
                "figures": verdict.figures,
            }
        )
        if verdict.passed is None:
            if self.windows < self.max_windows:
                self.window_started_at = now  # wait one more window for traffic
                return None
            self._fail(now, f"batch {self.batch_index + 1}: not enough live traffic ({verdict.reasons[0]})")
            return False
        if not verdict.passed:
            self._fail(now, f"batch {self.batch_index + 1}: " + "; ".join(verdict.reasons))
            return False
        f = verdict.figures
        self._log(
            now,
            f"batch {self.batch_index + 1} passed: agreement {f['agreement']:.3f} on {f['inputs']} inputs, "
            f"{f['errors']} errors, candidate p99 {f['candidate_p99_ms']} ms",
        )
        return True

    def _next_batch(self, now: float) -> None:
        self._log(now, f"batch {self.batch_index + 1} done")
        self.batch_index += 1
        self.batch_stage = "shadow"
        self.window_started_at = None
        self.windows = 0
        self.retry_since = None
        if self.batch_index == len(self.batches):
            # devices that were offline get another try, as a batch of their own (shadow-checked too)
            retry = sorted(
                d for d, r in self.devices.items() if r.state == "deferred" and r.attempts < self.max_attempts
            )
            if retry:
                for d in retry:
                    self.devices[d].state = "pending"
                self.batches.append(retry)
                self.retry_since = now
                self._log(now, f"retrying {len(retry)} devices that were offline: {retry}")

    def _finish(self, now: float) -> None:
        for rec in self.devices.values():
            if rec.state in ("pending", "deferred"):
                rec.state = "offline"
        left = sorted(d for d, r in self.devices.items() if r.state != "active")
        self.phase = "incomplete" if left else "promoted"
        self.reason = f"not reached (offline): {left}" if left else None
        self._log(now, self.phase)

    def _defer(self, dev: str, now: float, why: str) -> None:
        """Skip the device in this batch; it gets a retry batch at the end while it has attempts left."""
        rec = self.devices[dev]
        rec.attempts += 1 if why == "offline" else 0  # a sent action counted its attempt already
        rec.state, rec.error, rec.sent_at = "deferred", why, None
        self._log(now, f"{dev}: {why}, attempt {rec.attempts} of {self.max_attempts}")

    def _expire(self, now: float) -> None:
        """A device that did not acknowledge in time is treated as offline: retried later."""
        for dev, rec in self.devices.items():
            if rec.sent_at is None or now - rec.sent_at < self.ack_timeout_s:
                continue
            if rec.state in ("shadowing", "activating") and self.phase == "running":
                self._defer(dev, now, f"no answer in {self.ack_timeout_s:g} s")
            elif rec.state in ("dropping", "rolling_back"):
                if rec.undo_attempts >= self.max_attempts:
                    # reported, never waited for forever: the device must be looked at by hand
                    rec.error = f"did not confirm the {'drop' if rec.state == 'dropping' else 'rollback'}"
                    rec.state, rec.sent_at = "unreachable", None
                    self._log(now, f"{dev}: {rec.error} after {rec.undo_attempts} tries")
                else:
                    rec.sent_at = None  # sent again by _rollback_actions
                    rec.state = "shadow" if rec.state == "dropping" else "active"

    def _fail(self, now: float, reason: str) -> None:
        self.reason = reason
        self.phase = "rolling_back"
        self._log(now, f"failed: {reason}")

    def _rollback_actions(self, now: float) -> list[Action]:
        actions = []
        for dev, rec in sorted(self.devices.items()):
            # a device that never answered may still have loaded the candidate: it gets a drop too
            unanswered = rec.state == "deferred" and rec.error is not None and rec.error != "offline"
            if rec.state in ("shadow", "shadowing") or unanswered:
                rec.state, rec.sent_at = "dropping", now
                rec.undo_attempts += 1
                actions.append(Action("drop", dev, self.model_sha256))
            elif rec.state in ("active", "activating") and rec.previous_sha256 not in (
                None,
                self.model_sha256,
            ):
                rec.state, rec.sent_at = "rolling_back", now
                rec.undo_attempts += 1
                actions.append(Action("rollback", dev, str(rec.previous_sha256)))
        if not actions and not any(r.state in ("dropping", "rolling_back") for r in self.devices.values()):
            self.phase = "rolled_back"
            self._log(now, "rolled back")
        return actions

    def resume(self, now: float, current: Mapping[str, tuple[str | None, str | None]]) -> None:
        """Pick up a saved rollout in a new run. ``current``: device -> (the sha256 it serves, the
        candidate it shadows) from its retained status. Answers that came while no run listened are
        read from the status: what it confirms counts as acknowledged; what it does not is sent again.
        An ``incomplete`` rollout gets its offline devices back as one more batch."""
        if self.phase == "incomplete":
            retry = []
            for dev, rec in sorted(self.devices.items()):
                if rec.state != "offline":
                    continue
                if (current.get(dev) or (None, None))[0] == self.model_sha256:
                    rec.state = "active"
                else:
                    rec.state, rec.attempts, rec.sent_at, rec.error = "pending", 0, None, None
                    retry.append(dev)
            self.phase, self.reason = "running", None
            if retry:
                self.batches.append(retry)
                self.batch_index, self.batch_stage = len(self.batches) - 1, "shadow"
                self.window_started_at, self.windows, self.retry_since = None, 0, now
            else:
                self.batch_index = len(self.batches)
            self._log(now, f"resumed: retrying {len(retry)} devices that were offline: {retry}")
            return
        for dev, rec in sorted(self.devices.items()):
            serving, shadowing = current.get(dev) or (None, None)
            before = rec.state
            if rec.state == "shadowing":
                rec.state = "shadow" if shadowing == self.model_sha256 else "pending"
            elif rec.state == "activating":
                if serving == self.model_sha256:
                    rec.state = "active"
                else:
                    rec.state = "shadow" if shadowing == self.model_sha256 else "pending"
            elif rec.state == "dropping":
                rec.state = "shadow" if shadowing == self.model_sha256 else "dropped"
            elif rec.state == "rolling_back":
                rec.state = "rolled_back" if serving == rec.previous_sha256 else "active"
            else:
                continue
            if rec.state == "pending":
                rec.attempts = max(0, rec.attempts - 1)  # the unanswered send does not count
            rec.sent_at = None
            self._log(now, f"resumed: {dev} {before} -> {rec.state} (from its status)")

    # --------------------------------------------------------------------------------- events
    def on_ack(self, device: str, kind: str, ok: bool, now: float, reason: str | None = None) -> None:
        """A device answered an action (its ``cmd/result``)."""
        rec = self.devices.get(device)
        if rec is None:
            return
        expected = {
            "shadow": "shadowing",
            "install": "activating",
            "activate": "activating",
            "drop": "dropping",
            "rollback": "rolling_back",
        }.get(kind)
        if rec.state != expected:
            return  # a late or repeated answer: idempotent
        rec.sent_at = None
        if kind in ("drop", "rollback"):
            rec.state = "dropped" if kind == "drop" else "rolled_back"
            if not ok:
                rec.error = f"{kind} refused: {reason}"
            if self.phase == "rolling_back" and not any(
                r.state in ("dropping", "rolling_back") for r in self.devices.values()
            ):
                self._rollback_actions(now)
            return
        if not ok and kind == "activate" and (reason or "").startswith("no_candidate"):
            # the device no longer has the candidate (shadow mode does not survive a restart): not the
            # model's fault; it gets a fresh shadow check in the retry batch, the rest goes on
            self._defer(device, now, f"lost its candidate before the activation ({reason})")
            return
        if not ok:
            # the candidate was refused (signature, guard, does not load): the rollout stops here. A
            # refused shadow/install never replaced anything; a refused activate leaves it shadowing.
            rec.state, rec.error = ("shadow" if kind == "activate" else "failed"), reason
            self._fail(now, f"{device} refused {kind}: {reason}")
            return
        rec.state = "shadow" if kind == "shadow" else "active"
        self._log(now, f"{device}: {kind} ok")

    def on_report(self, report: ShadowReport) -> None:
        if report.device in self.devices and report.candidate_sha256 == self.model_sha256:
            self.reports[report.device] = report

    # --------------------------------------------------------------------------------- outcome, state
    def exit_code(self) -> int | None:
        return {
            "promoted": EXIT_PROMOTED,
            "rolled_back": EXIT_ROLLED_BACK,
            "incomplete": EXIT_INCOMPLETE,
        }.get(self.phase)

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for rec in self.devices.values():
            counts[rec.state] = counts.get(rec.state, 0) + 1
        return {
            "rollout_id": self.rollout_id,
            "model_sha256": self.model_sha256,
            "version": self.version,
            "phase": self.phase,
            "batch": self.batch_index,
            "batches": len(self.batches),
            "devices": counts,
            "reason": self.reason,
            "last_verdict": self.verdicts[-1] if self.verdicts else None,
            "exit_code": self.exit_code(),
        }

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["state_version"] = STATE_VERSION
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Rollout:
        if doc.get("state_version") != STATE_VERSION:
            raise EdgeError(
                f"rollout state version {doc.get('state_version')!r} is not {STATE_VERSION}",
                "finish it with the edge-fleet that started it, or start a new rollout",
            )
        data = {k: v for k, v in doc.items() if k != "state_version"}
        data["gates"] = Gates(**data["gates"])
        data["devices"] = {d: DeviceRecord(**r) for d, r in data["devices"].items()}
        data["reports"] = {d: ShadowReport(**r) for d, r in data["reports"].items()}
        return cls(**data)


# ------------------------------------------------------------------------------------- state files
def default_state_dir() -> Path:
    """Where rollout state files live: ``$XDG_STATE_HOME/edge-fleet/rollouts`` (~/.local/state/...)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-fleet" / "rollouts"


def save(rollout: Rollout, state_dir: Path) -> Path:
    """Write the state atomically (a crash mid-write leaves the previous state, never half a file)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{rollout.rollout_id}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rollout.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load(rollout_id: str, state_dir: Path) -> Rollout:
    path = state_dir / f"{rollout_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in state_dir.glob("*.json")) if state_dir.is_dir() else []
        raise EdgeError(
            f"no rollout {rollout_id!r} in {state_dir}",
            f"known rollouts: {', '.join(known)}" if known else "check the id, or --state-dir",
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise EdgeError(
            f"rollout state {path} is not JSON ({err})", "restore it or start a new rollout"
        ) from err
    return Rollout.from_json(doc)
