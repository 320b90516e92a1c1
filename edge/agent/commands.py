"""Commands on ``<prefix>/<device>/cmd``: a registry of action name -> handler.

Handlers run on a worker thread (a reload or a benchmark must not stall the
MQTT network thread) and return a JSON-able dict, or raise CommandError.
Whatever arrives — not JSON, not an object, unknown action, a handler bug —
ends as an ``ok: false`` result on ``cmd/result``, never as a dead agent.

The registry is also the one gate every command passes: an action listed in
``commands.disabled`` is refused without running, and every command (done,
failed, disabled, malformed) is written to the audit log. A handler is a
function of the command alone; the collaborators it needs (the model slot, a
publish function) are bound when the app builds it (see :func:`builtin_handlers`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from edge.agent.audit import BUILTIN_ACTIONS, action_allowed
from edge.agent.config import SettingsUpdate
from edge.contract.payload import PayloadError, loads
from edge.errors import EdgeError
from edge.validation import DecodeError, decode

if TYPE_CHECKING:
    from edge.agent.audit import AuditLog
    from edge.agent.slot import ModelSlot

log = logging.getLogger("edge.agent.cmd")

# Commands are small JSON objects; a larger one is refused before it is parsed.
MAX_COMMAND_BYTES = 64 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]  # command -> result
Outcome = tuple[Any, Any, bool, "dict[str, Any] | None", "str | None"]  # (id, action, ok, result, error)


class CommandError(Exception):
    """A command that cannot be carried out; the message goes into the error result."""


class CommandRegistry:
    """``audit``: where every command is recorded (None: nowhere); ``disabled``: ``commands.disabled``;
    ``topic``: the command topic, named in the audit records."""

    def __init__(
        self, *, audit: AuditLog | None = None, disabled: Sequence[str] = (), topic: str = "cmd"
    ) -> None:
        self.handlers: dict[str, Handler] = {}
        self.audit = audit
        self.disabled = tuple(disabled)
        self.topic = topic

    def register(self, action: str, handler: Handler) -> None:
        self.handlers[action] = handler

    def __contains__(self, action: object) -> bool:
        return action in self.handlers

    def allows(self, action: str) -> bool:
        return action_allowed(self.disabled, action)

    def dispatch(self, payload: bytes) -> Outcome:
        """-> (id, action, ok, result, error). Never raises."""
        cid, action, ok, result, error, outcome = self._run(payload)
        if self.audit is not None:
            try:
                self.audit.record(
                    action=action, cmd_id=cid, topic=self.topic, outcome=outcome, payload=payload, error=error
                )
            except Exception:  # auditing must never take the command path down
                log.exception("cannot audit command %r", action)
        return cid, action, ok, result, error

    def _run(self, payload: bytes) -> tuple[Any, Any, bool, dict[str, Any] | None, str | None, str]:
        try:
            cmd = loads(payload, what="command", max_bytes=MAX_COMMAND_BYTES)
        except PayloadError as exc:
            return None, None, False, None, f'{exc.what}; send {{"id": ..., "action": ...}}', "malformed"
        if not isinstance(cmd, dict):
            why = f"command must be a JSON object, received {type(cmd).__name__}"
            return None, None, False, None, why, "malformed"
        cid, action = cmd.get("id"), cmd.get("action")
        expected = "(expected one of: " + ", ".join(sorted(self.handlers)) + ")"
        if not isinstance(action, str) or not action:
            return cid, action, False, None, f"command has no 'action' {expected}", "malformed"
        if not self.allows(action):
            why = f"action {action!r} is disabled on this device (commands.disabled in the agent config)"
            return cid, action, False, None, why, "disabled"
        handler = self.handlers.get(action)
        if handler is None:
            return cid, action, False, None, f"unknown action {action!r} {expected}", "malformed"
        try:
            return cid, action, True, handler(cmd), None, "done"
        except CommandError as exc:
            return cid, action, False, None, str(exc), "failed"
        except Exception as exc:  # a handler bug must not kill the agent
            log.exception("command %r failed", action)
            return cid, action, False, None, f"{type(exc).__name__}: {exc}", "failed"


def _id_and_action(payload: bytes) -> tuple[Any, Any]:
    try:
        cmd = loads(payload, what="command", max_bytes=MAX_COMMAND_BYTES)
    except PayloadError:
        return None, None
    return (cmd.get("id"), cmd.get("action")) if isinstance(cmd, dict) else (None, None)


class CommandWorker:
    """Runs commands one at a time, off the MQTT thread, and publishes their results."""

    def __init__(self, registry: CommandRegistry, publish: Callable[..., None]) -> None:
        self.registry = registry
        self.publish = publish  # (id, action, ok, result, error)
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=256)
        self.thread = threading.Thread(target=self._run, name="edge-commands", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, payload: bytes) -> None:
        try:
            self.queue.put_nowait(payload)
        except queue.Full:
            cid, action = _id_and_action(payload)  # so the sender can tell which command to send again
            self.publish(cid, action, False, None, "too many pending commands; retry later")

    def stop(self) -> None:
        # Never block shutdown behind a full queue (a flood of commands, a handler still running):
        # commands not started yet are dropped, the agent is going away.
        while True:
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
            try:
                self.queue.put_nowait(None)
                break
            except queue.Full:  # the network thread refilled it meanwhile
                continue
        self.thread.join(0.5)

    def _run(self) -> None:
        while True:
            payload = self.queue.get()
            if payload is None:
                return
            try:
                cid, action, ok, result, error = self.registry.dispatch(payload)
            except BaseException as exc:  # dispatch never raises; should it, the worker must live on
                log.exception("command dispatch failed")
                cid, action, ok, result, error = None, None, False, None, f"{type(exc).__name__}: {exc}"
            if ok:
                log.info("command %s (id %s) done", action, cid)
            else:
                log.warning("command %s (id %s) refused: %s", action, cid, error)
            try:
                self.publish(cid, action, ok, result, error)
            except Exception:
                log.exception("cannot publish the result of command %r", action)


# --- built-in actions ---------------------------------------------------------------------------------


def ping(vitals: Callable[[], dict[str, Any]]) -> Handler:
    """``vitals()``: agent version, uptime, last seq (the app's)."""

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, **vitals()}

    return handle


def reload(slot: ModelSlot) -> Handler:
    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        try:
            model = slot.reload()
        except Exception as exc:
            raise CommandError(f"reload failed, the previous model keeps running: {exc}") from exc
        return {"model_path": str(model.path), "model_sha256": model.sha256}

    return handle


def settings_from(cmd: dict[str, Any]) -> dict[str, Any]:
    """The values of a ``set`` command, checked against the config's own constraints; raises CommandError."""
    params = {k: v for k, v in cmd.items() if k not in ("id", "action")}
    if isinstance(params.get("values"), dict):  # {"action":"set","values":{"top_k":3}} also accepted
        params = params["values"]
    try:
        update = decode(SettingsUpdate, params)
    except DecodeError as exc:
        raise CommandError(
            "; ".join(f"{key} = {value!r}: {message}" for key, value, message in exc.problems)
        ) from exc
    values = {k: v for k, v in msgspec.structs.asdict(update).items() if v is not None}
    if not values:
        settable = ", ".join(f.name for f in msgspec.structs.fields(SettingsUpdate))
        raise CommandError(f'set needs at least one of: {settable} (e.g. {{"top_k": 3}})')
    return values


def set_(slot: ModelSlot) -> Handler:
    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        slot.update_settings(**settings_from(cmd))
        return slot.settings_view()

    return handle


def edge_bench_runner() -> Callable[..., Any]:
    """``edge.bench.run_for_agent``, imported on first use: edge-bench may not be in the build."""
    try:
        spec = importlib.util.find_spec("edge.bench")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise CommandError("bench not available in this build (edge.bench is not installed)")
    fn = getattr(importlib.import_module("edge.bench"), "run_for_agent", None)
    if fn is None:
        raise CommandError("bench not available in this build (edge.bench has no run_for_agent)")
    return fn


def bench(
    slot: ModelSlot,
    device: str,
    publish: Callable[[Any], None],
    runner: Callable[[], Callable[..., Any]] = edge_bench_runner,
) -> Handler:
    """``runner()(model, params, device=...)`` on the serving model; ``publish(report)`` sends the
    report to ``<prefix>/<device>/bench``, and it is also the command's result."""

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        fn = runner()
        params = {k: v for k, v in cmd.items() if k not in ("id", "action")}
        pipe = slot.pipeline
        try:
            with pipe.lock:  # the interpreter is not thread-safe: inferences wait meanwhile
                report = fn(pipe.model, params, device=device)
        except EdgeError as exc:
            raise CommandError(f"{exc.what} (fix: {exc.fix})" if exc.fix else exc.what) from exc
        publish(report)
        return report if isinstance(report, dict) else {"report": report}

    return handle


def builtin_handlers(
    *,
    slot: ModelSlot,
    vitals: Callable[[], dict[str, Any]],
    device: str,
    publish_bench: Callable[[Any], None],
) -> dict[str, Handler]:
    """The agent's own actions (:data:`BUILTIN_ACTIONS`), bound to their collaborators."""
    handlers = {
        "ping": ping(vitals),
        "reload": reload(slot),
        "set": set_(slot),
        "bench": bench(slot, device, publish_bench),
    }
    assert tuple(handlers) == BUILTIN_ACTIONS
    return handlers
