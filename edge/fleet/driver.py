"""The I/O side of ``edge-fleet rollout``: devices from the inventory, signed messages out, answers in.

:class:`edge.fleet.rollout.Rollout` decides; this module connects it to the broker:

- the devices come from the retained inventory (``edge-fleet ls``): ``--devices`` ids or globs;
- every :class:`~edge.fleet.rollout.Action` becomes one signed message on ``<prefix>/<device>/model/set``
  (QoS 1): the candidate itself for ``shadow``/``install``, a small stage message naming a sha256 for
  ``activate``/``drop``/``rollback`` (:mod:`edge.ota.manifest`);
- ``<prefix>/+/cmd/result`` feeds ``on_ack``, ``<prefix>/+/shadow`` windows feed ``on_report`` (summed
  per device since its shadow began, so a gate sees every input, not only the last window), retained
  ``availability`` says who is online.

The state is saved after every change, before anything it decided is sent, so a run killed at any point
resumes from the same file: re-running the same command finds it by the rollout id. The MQTT session is
persistent (its client id is the rollout's), so answers sent while no run was listening wait on the broker;
what an answer would have said is also read from each device's retained status when a run resumes.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import queue
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edge.contract import messages
from edge.digest import sha256_hex
from edge.errors import EdgeError
from edge.fleet import rollout as ro
from edge.fleet.connect import connect_subscribed
from edge.fleet.inventory import Collected, collect
from edge.transport.topics import topic_for
from edge.transport.url import BrokerURL

LISTENED = ("cmd_result", "shadow", "availability")
ACTION_KINDS = ("shadow", "install", "activate", "drop", "rollback")  # edge.fleet.rollout.Action.kind


@dataclass(frozen=True)
class Device:
    """What the inventory says of one device, as far as a rollout needs it."""

    serving: str | None  # sha256 of the model it runs
    size: int | None
    version: str | None
    shadowing: str | None  # sha256 of the candidate it shadows
    online: bool


def resolve_devices(spec: str, collected: Collected) -> dict[str, Device]:
    """``--devices``: comma-separated ids and globs -> the chosen devices, by id.

    An exact id must be known to the broker (a retained availability or status); a glob must match one."""
    known: dict[str, Device] = {}
    for dev, state in collected.fleet.devices.items():
        status = state.status or {}
        shadow = status.get("shadow") if isinstance(status.get("shadow"), dict) else None
        model: dict[str, Any] = status["model"] if isinstance(status.get("model"), dict) else {}
        known[dev] = Device(
            serving=state.model_sha256(),
            size=model.get("size_bytes"),
            version=status.get("model_version"),
            shadowing=(shadow or {}).get("candidate_sha256"),
            online=state.availability == messages.ONLINE,
        )
    items = [x.strip() for x in spec.split(",") if x.strip()]
    if not items:
        raise EdgeError("--devices is empty", "give device ids or globs, e.g. --devices 'cam-*' or a,b,c")
    chosen: set[str] = set()
    for item in items:
        if any(c in item for c in "*?["):
            hit = fnmatch.filter(known, item)
            if not hit:
                raise EdgeError(
                    f"--devices {item!r} matches none of the {len(known)} devices the broker knows",
                    "list them with edge-fleet ls --broker URL",
                )
            chosen.update(hit)
        elif item in known:
            chosen.add(item)
        else:
            raise EdgeError(
                f"device {item!r} is not known to the broker (no retained availability or status)",
                "check the id against edge-fleet ls --broker URL; a device must have connected once",
            )
    return {d: known[d] for d in sorted(chosen)}


@dataclass
class Accumulated:
    """A device's shadow windows for one candidate, summed since its shadow began."""

    inputs: int = 0
    agreed: float = 0.0  # sum of agreement x inputs
    scored: int = 0  # inputs of windows that had an agreement
    errors: int = 0
    candidate_p99: float | None = None
    active_p99: float | None = None
    windows: int = 0

    def add(self, w: ro.ShadowReport) -> None:
        self.windows += 1
        self.inputs += w.inputs
        self.errors += w.errors
        if w.agreement is not None and w.inputs > 0:
            self.agreed += w.agreement * w.inputs
            self.scored += w.inputs
        if w.candidate_p99_ms is not None:
            self.candidate_p99 = max(self.candidate_p99 or 0.0, float(w.candidate_p99_ms))
        if w.active_p99_ms is not None:
            self.active_p99 = max(self.active_p99 or 0.0, float(w.active_p99_ms))

    def report(self, device: str, sha: str) -> ro.ShadowReport:
        agreement = self.agreed / self.scored if self.scored else None
        return ro.ShadowReport(
            device, sha, self.inputs, agreement, self.errors, self.candidate_p99, self.active_p99
        )


@dataclass
class Counters:
    sent: dict[str, int] = field(default_factory=dict)  # action kind -> messages published
    bytes_sent: int = 0
    answers: int = 0  # cmd/result of this rollout
    windows: int = 0  # shadow windows for the candidate
    unconfirmed_publishes: int = 0  # QoS 1 PUBACKs missing at the end


class Signer:
    """Builds the signed message of each action (edge.ota.manifest; the agent verifies it)."""

    def __init__(self, model: bytes, labels: bytes | None, key: Any, version: str, window_s: float) -> None:
        self.model, self.labels, self.key, self.version = model, labels, key, version
        self.sha256 = sha256_hex(model)
        # the agent's own windows: several per rollout window, so one always lands inside it
        self.shadow_window_s = max(0.5, window_s / 3)

    def message(self, action: ro.Action, cmd_id: str, previous: ro.DeviceRecord) -> bytes:
        from edge.ota.manifest import build_message, build_stage_message

        if action.kind in ("shadow", "install"):
            return build_message(
                self.model,
                self.key,
                version=self.version,
                labels=self.labels,
                device=action.device,
                cmd_id=cmd_id,
                stage=action.kind,
                shadow_fraction=1.0,
                shadow_window_s=self.shadow_window_s,
            )
        if action.kind == "rollback":  # activate the model the candidate replaced
            return build_stage_message(
                self.key,
                stage="activate",
                sha256=action.sha256,
                size=previous.previous_size or 0,
                version=previous.previous_version or "previous",
                device=action.device,
                cmd_id=cmd_id,
            )
        return build_stage_message(
            self.key,
            stage=action.kind,
            sha256=action.sha256,
            size=len(self.model),
            version=self.version,
            device=action.device,
            cmd_id=cmd_id,
        )


def cmd_id(rollout_id: str, action: ro.Action, attempt: int) -> str:
    """Parseable by a later run too: answers to a killed run's messages still count."""
    return f"{rollout_id}:{action.kind}:{action.device}:{attempt}"


def parse_cmd_id(value: Any, rollout_id: str) -> str | None:
    """The action kind an answer is for, when it answers this rollout."""
    if not isinstance(value, str):
        return None
    parts = value.split(":")
    if len(parts) == 4 and parts[0] == rollout_id and parts[1] in ACTION_KINDS:
        return parts[1]
    return None


@contextmanager
def locked(state_dir: Path, rollout_id: str) -> Iterator[None]:
    """One run per rollout at a time: a second would fight the first over the same MQTT session."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{rollout_id}.lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            fh.seek(0)
            raise EdgeError(
                f"rollout {rollout_id} is being driven by another edge-fleet run ({fh.read().strip()})",
                f"wait for it, or stop it; {status_command(rollout_id, state_dir)} shows where it stands",
            ) from err
        fh.truncate(0)
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_not_locked(state_dir: Path, rollout_id: str) -> None:
    """Refuse early, before saying "resuming", when another run drives this rollout (the run's own lock
    is taken again by :meth:`Driver.run`)."""
    if (state_dir / f"{rollout_id}.lock").exists():
        with locked(state_dir, rollout_id):
            pass


class Driver:
    """Runs one rollout to its end against a broker."""

    def __init__(
        self,
        rollout: ro.Rollout,
        signer: Signer,
        broker: BrokerURL,
        *,
        prefix: str = "edge",
        state_dir: Path,
        online: Mapping[str, bool] | None = None,
        progress: Callable[[str], None] | None = None,
        tick_s: float = 0.2,
    ) -> None:
        self.r, self.signer, self.broker, self.prefix = rollout, signer, broker, prefix
        self.state_dir = state_dir
        self.online: dict[str, bool] = dict(online or {})
        self.progress = progress or (lambda _line: None)
        self.tick_s = tick_s
        self.counters = Counters()
        self.acc: dict[str, Accumulated] = {}
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._pending: list[Any] = []  # MQTTMessageInfo of QoS 1 publishes not yet acknowledged
        self._printed = len(rollout.events)
        self._last_line = ""
        self._fingerprint: Any = None
        self.started = time.monotonic()

    # --------------------------------------------------------------------------------- the MQTT side
    def _connect(self) -> Any:
        def configure(client: Any) -> None:
            client.max_inflight_messages_set(200)
            client.max_queued_messages_set(0)

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            self.inbox.put((msg.topic, bytes(msg.payload)))

        return connect_subscribed(
            self.broker,
            f"edge-fleet-rollout-{self.r.rollout_id}",
            [(topic_for(k, "+", self.prefix), 1) for k in LISTENED],
            on_message,
            timeout_s=15,
            clean_session=False,  # answers sent while no run listens wait on the broker
            configure=configure,
        )

    def _forget_session(self, client: Any) -> None:
        done = threading.Event()
        client.on_unsubscribe = lambda *_a: done.set()
        client.unsubscribe([topic_for(k, "+", self.prefix) for k in LISTENED])
        done.wait(5)

    def _split(self, topic: str) -> tuple[str, str] | None:
        head = self.prefix.rstrip("/") + "/"
        if not topic.startswith(head):
            return None
        device, _, leaf = topic[len(head) :].partition("/")
        for kind in LISTENED:
            if topic == topic_for(kind, device, self.prefix):
                return device, kind
        return None

    def _handle(self, topic: str, payload: bytes, now: float) -> None:
        where = self._split(topic)
        if where is None or where[0] not in self.r.devices:
            return
        device, kind = where
        if kind == "availability":
            self.online[device] = payload.decode(errors="replace") == messages.ONLINE
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if kind == "cmd_result":
            action = parse_cmd_id(doc.get("id"), self.r.rollout_id)
            if action is None:
                return
            self.counters.answers += 1
            ok = bool(doc.get("ok"))
            reason = doc.get("reason")
            if not ok and action == "drop" and reason == "no_candidate":
                ok = True  # nothing left to drop is what a drop wants
            why = None if ok else ": ".join(str(x) for x in (reason, doc.get("error")) if x)
            if why and doc.get("fix"):
                why += f" (fix: {doc['fix']})"  # the device's advice: a wrong key or a refused model
            self.r.on_ack(device, action, ok, now, why)
        elif kind == "shadow":
            try:
                window = ro.ShadowReport.from_message(device, doc)
            except (KeyError, TypeError, ValueError):
                return
            if window.candidate_sha256 != self.r.model_sha256:
                return
            self.counters.windows += 1
            acc = self.acc.setdefault(device, Accumulated())
            acc.add(window)
            self.r.on_report(acc.report(device, self.r.model_sha256))

    def _send(self, client: Any, actions: list[ro.Action]) -> None:
        for a in actions:
            attempt = self.r.devices[a.device].attempts + self.r.devices[a.device].undo_attempts
            if a.kind == "shadow":
                self.acc.pop(a.device, None)  # a new shadow starts a new sum
            payload = self.signer.message(a, cmd_id(self.r.rollout_id, a, attempt), self.r.devices[a.device])
            info = client.publish(topic_for("model_set", a.device, self.prefix), payload, qos=1)
            self._pending.append(info)
            self.counters.sent[a.kind] = self.counters.sent.get(a.kind, 0) + 1
            self.counters.bytes_sent += len(payload)
        self._pending = [i for i in self._pending if not i.is_published()]

    # --------------------------------------------------------------------------------- the loop
    def _save_if_changed(self) -> None:
        r = self.r
        fp = (
            r.phase,
            r.batch_index,
            r.batch_stage,
            r.window_started_at,
            r.windows,
            len(r.events),
            len(r.verdicts),
            len(r.batches),
        )
        if fp != self._fingerprint:
            ro.save(r, self.state_dir)
            self._fingerprint = fp

    def _report_progress(self) -> None:
        for line in self.r.events[self._printed :]:
            text = line.split(" ", 1)[1]
            if not text.endswith(" ok"):  # per-device acknowledgements go into the batch line below
                self.progress(f"[{time.monotonic() - self.started:6.1f}s] {text}")
        self._printed = len(self.r.events)
        batch = self.r.current()
        if self.r.phase == "running" and batch:
            states: dict[str, int] = {}
            for d in batch:
                s = self.r.devices[d].state
                states[s] = states.get(s, 0) + 1
            line = (
                f"batch {self.r.batch_index + 1}/{len(self.r.batches)} ({len(batch)} devices): "
                + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            )
            if line != self._last_line:
                self._last_line = line
                self.progress(f"[{time.monotonic() - self.started:6.1f}s] {line}")

    def run(self) -> int:
        with locked(self.state_dir, self.r.rollout_id):
            client = self._connect()
            try:
                ro.save(self.r, self.state_dir)
                while True:
                    now = time.time()
                    changed = False
                    try:
                        item = self.inbox.get(timeout=self.tick_s)
                        while True:
                            self._handle(*item, now)
                            changed = True
                            item = self.inbox.get_nowait()
                    except queue.Empty:
                        pass
                    actions = self.r.step(time.time(), self.online)
                    if actions or changed:
                        ro.save(self.r, self.state_dir)  # before sending: a crash re-sends, never forgets
                        self._fingerprint = None
                    self._save_if_changed()
                    self._send(client, actions)
                    self._report_progress()
                    code = self.r.exit_code()
                    if code is not None:
                        return code
            finally:
                deadline = time.monotonic() + 10
                for info in self._pending:
                    info.wait_for_publish(max(0.01, deadline - time.monotonic()))
                self.counters.unconfirmed_publishes = sum(not i.is_published() for i in self._pending)
                if self.r.exit_code() is not None:
                    # finished: the broker must stop keeping this session's messages (a killed run's
                    # session stays, on purpose: its resumption reads what came meanwhile)
                    self._forget_session(client)
                client.disconnect()
                client.loop_stop()
                ro.save(self.r, self.state_dir)


def print_progress(stream: TextIO) -> Callable[[str], None]:
    def out(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return out


def outcome(r: ro.Rollout, driver: Driver | None, state_path: Path) -> dict[str, Any]:
    """The JSON document of ``--json``: the summary, every device, every check, the counts."""
    doc = r.summary()
    doc["state_file"] = str(state_path)
    doc["devices_detail"] = {
        d: {"state": rec.state, "previous_sha256": rec.previous_sha256, "error": rec.error}
        for d, rec in sorted(r.devices.items())
    }
    doc["verdicts"] = r.verdicts
    if driver is not None:
        c = driver.counters
        doc["messages"] = {
            "sent": c.sent,
            "sent_total": sum(c.sent.values()),
            "bytes_sent": c.bytes_sent,
            "answers": c.answers,
            "shadow_windows": c.windows,
            "unconfirmed_publishes": c.unconfirmed_publishes,
        }
        doc["seconds"] = round(time.monotonic() - driver.started, 3)
    return doc


def main_rollout(args: Any, out: TextIO = sys.stdout) -> int:
    """``edge-fleet rollout``: plan (or resume), drive, report. Returns the exit code."""
    from edge.ota.keys import load_private_key
    from edge.transport.url import parse_broker_url

    model_path = Path(args.model)
    try:
        model = model_path.read_bytes()
    except OSError as err:
        raise EdgeError(f"cannot read the model {model_path}: {err.strerror}", "check the path") from err
    if not model:
        raise EdgeError(f"the model {model_path} is empty", "pass the .tflite file to roll out")
    labels = None
    if args.labels:
        try:
            labels = Path(args.labels).read_bytes()
        except OSError as err:
            raise EdgeError(
                f"cannot read the labels {args.labels}: {err.strerror}", "check --labels"
            ) from err
    notes = check_files(model, model_path, labels, args.labels)
    key = load_private_key(args.key)
    gates = ro.Gates(
        min_agreement=args.min_agreement,
        max_error_rate=args.max_error_rate,
        max_p99_ms=args.max_p99_ms,
        min_inputs=args.min_inputs,
    )
    if args.ack_timeout <= 0:
        raise EdgeError(f"--ack-timeout must be > 0, got {args.ack_timeout}", "e.g. --ack-timeout 60")
    if args.settle <= 0:
        raise EdgeError(f"--settle must be > 0, got {args.settle}", "e.g. --settle 0.5")
    broker = parse_broker_url(args.broker)
    state_dir = Path(args.state_dir) if args.state_dir else ro.default_state_dir()
    progress = print_progress(sys.stderr if args.json else out)
    for note in notes:
        progress(f"note: {note}")

    collected = collect(broker, prefix=args.prefix, settle_s=args.settle, wait_s=max(10.0, args.settle * 4))
    devices = resolve_devices(args.devices, collected)
    sha = sha256_hex(model)
    version = args.version or model_path.stem
    plan = ro.Rollout.plan(
        model_sha256=sha,
        devices={d: v.serving for d, v in devices.items()},
        gates=gates,
        canary=args.canary,
        batch=args.batch,
        window_s=args.window,
        shadow_batches=not args.no_shadow_batches,
        version=version,
    )
    plan.ack_timeout_s = args.ack_timeout
    path = state_dir / f"{plan.rollout_id}.json"
    resumed = None
    if path.is_file():
        check_not_locked(state_dir, plan.rollout_id)
        resumed = ro.load(plan.rollout_id, state_dir)
    check_other_candidates(
        resumed or plan, {d: v.shadowing for d, v in devices.items()}, state_dir, args, progress
    )
    if resumed is not None:
        r = resumed
        progress(f"resuming rollout {r.rollout_id} ({r.phase}, batch {r.batch_number} of {len(r.batches)})")
        r.ack_timeout_s = args.ack_timeout
        r.resume(time.time(), {d: (v.serving, v.shadowing) for d, v in devices.items()})
    else:
        r = plan
        for d, v in devices.items():
            r.devices[d].previous_size, r.devices[d].previous_version = v.size, v.version
        progress(
            f"rollout {r.rollout_id}: {sha[:12]} ({version}) to {len(devices)} devices in {len(r.batches)} "
            f"batches (canary {len(r.batches[0])}), window {args.window:g} s; state {path}"
        )
    online = {d: v.online for d, v in devices.items()}
    driver = Driver(
        r,
        Signer(model, labels, key, version, r.window_s),
        broker,
        prefix=args.prefix,
        state_dir=state_dir,
        online=online,
        progress=progress,
    )
    status_cmd = status_command(r.rollout_id, args.state_dir)
    try:
        code = driver.run() if r.exit_code() is None else r.exit_code()
    except KeyboardInterrupt:
        # The state is saved before anything is sent, so nothing is lost; but what was sent stays where
        # it is (a candidate keeps shadowing), which the user must know to decide what to do next.
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r.summary()["devices"].items()))
        (sys.stderr if args.json else out).write(
            f"interrupted: rollout {r.rollout_id} stopped at batch {r.batch_number} "
            f"of {len(r.batches)} ({counts}); its state is saved in {path}. Devices keep what they were "
            "sent (a shadowing candidate goes on shadowing). Run the same command again to resume, "
            f"or see where it stands: {status_cmd}\n"
        )
        raise
    assert code is not None
    doc = outcome(r, driver, path)
    if args.json:
        json.dump(doc, out, indent=2)
        out.write("\n")
        return code
    counts = ", ".join(f"{n} {s}" for s, n in sorted(doc["devices"].items()))
    if code == ro.EXIT_PROMOTED:
        out.write(f"promoted: {sha[:12]} ({version}) serves on every device ({counts})\n")
    elif code == ro.EXIT_ROLLED_BACK:
        out.write(f"ROLLED BACK: {r.reason}\n")
        last = doc["last_verdict"]
        if last is not None:
            out.write(f"figures (batch {last['batch'] + 1}): {json.dumps(last['figures'])}\n")
        out.write(f"devices: {counts}\n")
        # A re-run of the same command finds this state and sends nothing: say how to try again (after
        # fixing a key, or with the same model on purpose), which otherwise only docs/fleet.md tells.
        out.write(f"to roll this model out again with the same options, first remove {path}\n")
    else:
        out.write(f"incomplete: {r.reason} ({counts}); run the same command again to resume\n")
    out.write(f"rollout {r.rollout_id}: {status_cmd}\n")
    return code


def check_files(model: bytes, model_path: Path, labels: bytes | None, labels_path: str | None) -> list[str]:
    """Refuse before anything is sent what every device would refuse (a rollout would only find out on
    the canary, as a rollback): MODEL must be a TFLite flatbuffer (its structure is parsed, no runtime is
    loaded), the labels UTF-8 text naming every class of a classifier. Returns warnings to print."""
    from edge.model import metadata
    from edge.model.labels import parse_labels
    from edge.model.tflite_file import parse
    from edge.ota.push import check_model

    check_model(model, model_path)
    if labels is None:
        return []
    try:
        text = labels.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EdgeError(
            f"--labels {labels_path} is not UTF-8 text (byte {err.start} is {labels[err.start]:#04x})",
            "pass the labels file made for this model: UTF-8 text, one class name a line",
        ) from err
    names = parse_labels(text)
    if not names:
        raise EdgeError(
            f"--labels {labels_path} names no class (it is empty)",
            "pass the labels file made for this model, one class name a line, or leave --labels out",
        )
    outputs = parse(model).subgraphs[0].outputs
    try:
        resolved = metadata.resolve(
            model, labels=names, classes=metadata.classifier_classes([t.shape for t in outputs])
        )
    except EdgeError as err:  # the devices refuse labels naming fewer classes than the model outputs
        raise EdgeError(f"--labels {labels_path}: {err.what} (model {model_path})", err.fix) from err
    return [f"--labels {labels_path}: {w}" for w in resolved.warnings]


# Devices in these states get nothing more from this rollout
SETTLED_STATES = ("active", "dropped", "rolled_back", "unreachable")


def other_candidates(r: ro.Rollout, shadowing: Mapping[str, str | None]) -> dict[str, str]:
    """Devices this rollout may still send to whose retained status shows a candidate it did not send:
    device -> that candidate's sha256. Sending ours would replace it (a device shadows one candidate),
    and the other rollout's drop would remove ours if it is the same model."""
    if r.phase in ("promoted", "rolled_back"):
        return {}  # a finished rollout sends nothing more
    found = {}
    for dev, rec in r.devices.items():
        other = shadowing.get(dev)
        if other is None or rec.state in SETTLED_STATES:
            continue
        if other == r.model_sha256 and rec.attempts > 0:
            continue  # this rollout sent it (a resumed run)
        found[dev] = other
    return found


def rollouts_of(sha256: str, state_dir: Path) -> list[str]:
    """Ids of the unfinished rollouts in ``state_dir`` that roll out ``sha256``."""
    ids = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("model_sha256") == sha256:
            if doc.get("phase") not in ("promoted", "rolled_back"):
                ids.append(str(doc.get("rollout_id") or path.stem))
    return ids


def check_other_candidates(
    r: ro.Rollout,
    shadowing: Mapping[str, str | None],
    state_dir: Path,
    args: Any,
    progress: Callable[[str], None],
) -> None:
    """Two rollouts on the same devices break each other: refuse (exit 2) unless ``--force``.

    No lock per broker is needed besides the state file's: the same command (same model, devices and
    options) is the same rollout id, whose lock already stops a second run; any other rollout has another
    id and may be driven from another machine, which only the devices' retained status shows."""
    found = other_candidates(r, shadowing)
    if not found:
        return
    by_sha: dict[str, list[str]] = {}
    for dev, sha in sorted(found.items()):
        by_sha.setdefault(sha, []).append(dev)
    listed = "; ".join(
        f"{', '.join(devs[:10])}{f' (+{len(devs) - 10} more)' if len(devs) > 10 else ''} shadow {sha}"
        + (" (the same model, sent by another rollout or by hand)" if sha == r.model_sha256 else "")
        for sha, devs in by_sha.items()
    )
    what = f"{len(found)} of the devices already shadow a candidate this rollout did not send: {listed}"
    if args.force:
        progress(f"note: --force: {what}; this rollout's candidate replaces it")
        return
    others = [i for sha in by_sha for i in rollouts_of(sha, state_dir) if i != r.rollout_id]
    where = (
        "finish or abandon that rollout first ("
        + ", ".join(status_command(i, args.state_dir) for i in others)
        + " shows where it stands)"
        if others
        else "finish or abandon the rollout that sent it first (edge-fleet status ROLLOUT_ID)"
    )
    raise EdgeError(
        what,
        f"{where}, or discard the candidate on those devices: edge-flash push-model THAT_MODEL.tflite "
        "--stage drop --broker URL --key KEY --device-id DEVICE; or pass --force to replace it with "
        "this rollout's candidate (the other rollout then fails on those devices)",
    )


def status_command(rollout_id: str, state_dir: Any) -> str:
    """The ``edge-fleet status`` command line that finds this rollout (with the --state-dir it used)."""
    extra = f" --state-dir {shlex.quote(str(state_dir))}" if state_dir else ""
    return f"edge-fleet status {rollout_id}{extra}"
