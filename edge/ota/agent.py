"""Security wiring of the device agent: model store, ``model/set``, audit, command switches, TLS and credentials.

One object per agent (:class:`AgentSecurity`); the agent calls it at four points:
start-up (crash recovery, which model to load), connect (TLS options, credentials,
subscriptions), every command (switches and audit) and every status (model
version, update state, the redacted broker URL).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.agent.audit import AuditLog, action_allowed
from edge.agent.commands import MAX_COMMAND_BYTES
from edge.contract.payload import PayloadError, loads
from edge.errors import EdgeError
from edge.ota.handler import ACTION, UpdateHandler, current_from_path
from edge.ota.install import InstalledModel, ModelStore
from edge.ota.manifest import MAX_HEADER

if TYPE_CHECKING:  # pragma: no cover
    from edge.agent.app import Agent
    from edge.agent.commands import CommandRegistry
    from edge.transport.url import BrokerURL

log = logging.getLogger("edge.agent.security")


def read_password_file(path: str | Path) -> str:
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise EdgeError(
            f"cannot read the MQTT password file {p}: {exc.strerror}",
            "check mqtt.password_file in the agent config",
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "MQTT password file %s is readable by other users (mode %o): chmod 600 it", p, mode & 0o777
        )
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise EdgeError(f"MQTT password file {p} is empty", "put the password on its first line")
    return lines[0]


class AuditedRegistry:
    """Wraps the agent's command registry: disabled actions are refused, every command is audited."""

    def __init__(self, inner: CommandRegistry, security: AgentSecurity) -> None:
        self.inner = inner
        self.security = security

    def register(self, action: str, handler: Any) -> None:
        self.inner.register(action, handler)

    def __contains__(self, action: object) -> bool:
        return action in self.inner

    @property
    def handlers(self) -> dict[str, Any]:
        return self.inner.handlers

    def dispatch(
        self, agent: Any, payload: bytes
    ) -> tuple[Any, Any, bool, dict[str, Any] | None, str | None]:
        """Same contract as the inner registry's: never raises (the command worker must not die)."""

        action: Any = None
        cmd: Any = None
        try:
            cmd = loads(payload, what="command", max_bytes=MAX_COMMAND_BYTES)
            action = cmd.get("action") if isinstance(cmd, dict) else None
        except PayloadError:
            pass
        if isinstance(action, str) and not action_allowed(self.security.cfg.commands.disabled, action):
            cid = cmd.get("id") if isinstance(cmd, dict) else None
            error: str | None = (
                f"action {action!r} is disabled on this device (commands.disabled in the agent config)"
            )
            self._audit(agent, action, cid, "disabled", payload, error)
            return cid, action, False, None, error
        cid, action, ok, result, error2 = self.inner.dispatch(agent, payload)
        error = error2
        known = isinstance(action, str) and action in self.inner.handlers
        self._audit(
            agent, action, cid, "done" if ok else ("failed" if known else "malformed"), payload, error
        )
        return cid, action, ok, result, error

    def _audit(
        self, agent: Any, action: Any, cid: Any, outcome: str, payload: bytes, error: str | None
    ) -> None:
        try:
            self.security.audit.record(
                action=action,
                cmd_id=cid,
                topic=agent.topics.cmd,
                outcome=outcome,
                payload=payload,
                error=error,
            )
        except Exception:  # auditing must never take the command path down
            log.exception("cannot audit command %r", action)


class AgentSecurity:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.cfg = agent.cfg
        self.store = ModelStore(agent.state_dir, self.cfg.ota.guard)
        self.notes = self.store.recover()  # before the model loads: an interrupted update is undone
        for note in self.notes:
            log.warning("%s", note)
        active = self.store.active()
        self.current: InstalledModel | None = active
        self.audit = AuditLog(
            self.cfg.audit, agent.state_dir / "audit.jsonl", agent.device, self._publish_audit
        )
        self.handler = UpdateHandler(
            self.cfg.ota, self.store, device=agent.device, current=self._current, activate=self.activate
        )
        # Bounded by bytes, not count: many small (bad) updates queue up, two huge ones do not.
        self._updates: queue.Queue[bytes | None] = queue.Queue()
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last_update: dict[str, Any] | None = None
        self.broker_redacted: str | None = None

    # --- which model ------------------------------------------------------------------------------------
    def model_path(self) -> tuple[Path | None, Path | None]:
        """(model, labels) the agent loads: the installed update if any, else the configured model."""
        if self.current is not None:
            labels = Path(self.current.labels_path) if self.current.labels_path else self.cfg.model.labels
            return Path(self.current.path), labels
        return self.cfg.model.path, self.cfg.model.labels

    def fall_back(self, error: Exception) -> bool:
        """The installed model does not load at start-up: go back to the previous model, else the configured one.

        Returns False when there is nothing to fall back to (the configured model itself failed).
        """
        bad = self.current
        if bad is None:
            return False
        prev = self.store.previous()
        configured = self.cfg.model.path
        target = prev if prev is not None and prev.path != bad.path and self.store._valid(prev) else None
        if target is not None and configured is not None and Path(target.path) == Path(configured):
            target = None
        self.store.set_active(target)
        self.current = target
        note = (
            f"installed model {bad.version!r} does not load ({getattr(error, 'what', error)}); went back to "
            + (f"version {target.version!r}" if target else "the configured model")
        )
        self.notes.append(note)
        log.warning("%s", note)
        return True

    def _current(self) -> InstalledModel | None:
        if self.current is not None:
            return self.current
        path = self.cfg.model.path
        return current_from_path(path) if path is not None else None

    def activate(self, model: InstalledModel | None) -> None:
        """Load ``model`` (None: the configured one) in-process, run a test inference, then switch to it."""
        from edge.inference.preprocess import random_input

        agent = self.agent
        previous = self.current
        configured = self.cfg.model.path
        if model is None or (configured is not None and Path(model.path) == Path(configured)):
            self.current = None  # the configured model: what the agent runs without any update
        else:
            self.current = model
        try:
            loaded = agent.load_model()
            pipe = agent._build_pipeline(loaded)
            spec = loaded.inputs[0]
            with pipe.lock:
                loaded.interpreter.set_tensor(spec.index, random_input(spec, np.random.default_rng(0)))
                loaded.interpreter.invoke()
        except Exception:
            self.current = previous
            raise
        with agent.pipeline.lock:
            agent.pipeline = pipe
        log.info("now serving %s (version %s)", loaded.path, model.version if model else "configured")
        agent.publish_status()

    # --- connection ---------------------------------------------------------------------------------------
    def tls_options(self, url: BrokerURL) -> Any:
        from edge.transport.client import TLSOptions

        t = self.cfg.tls
        if not (url.tls or t.ca_file or t.cert_file):
            return None
        return TLSOptions(
            ca_file=str(t.ca_file) if t.ca_file else None,
            cert_file=str(t.cert_file) if t.cert_file else None,
            key_file=str(t.key_file) if t.key_file else None,
            insecure=t.insecure,
        )

    def credentials(self, url: BrokerURL) -> BrokerURL:
        """Username and password from the config, ``EDGE_MQTT_PASSWORD`` or ``mqtt.password_file``."""
        mq = self.cfg.mqtt
        username = mq.username or url.username
        password = url.password
        if mq.password is not None:
            password = mq.password.get_secret_value()
        if mq.password_file is not None:
            password = read_password_file(mq.password_file)
        url = dataclasses.replace(url, username=username, password=password)
        self.broker_redacted = url.redacted()
        return url

    def attach(self) -> None:
        """After the agent created its client and command worker: subscriptions and command auditing."""
        agent = self.agent
        agent.commands = AuditedRegistry(agent.commands, self)  # type: ignore[assignment]
        if agent._worker is not None:
            agent._worker.registry = agent.commands
        agent.status_extras.append(lambda _agent: self.status())
        agent.client.subscribe(self.topic_model_set, self._on_model_set, 1)
        self._thread = threading.Thread(target=self._update_loop, name="edge-ota", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._updates.put(None)
            self._thread.join(5)

    @property
    def topic_model_set(self) -> str:
        return self.agent.topics.model_set

    @property
    def topic_audit(self) -> str:
        return self.agent.topics.audit

    def _publish_audit(self, entry: dict[str, Any]) -> None:
        outbox = self.agent.outbox
        if outbox is not None:
            outbox.send(self.topic_audit, entry, qos=1)

    # --- model/set ----------------------------------------------------------------------------------------
    def _on_model_set(self, msg: Any) -> None:
        payload = bytes(msg.payload)
        if not action_allowed(self.cfg.commands.disabled, ACTION):
            self._answer(
                payload,
                {
                    "ok": False,
                    "reason": "disabled",
                    "error": f"action {ACTION!r} is disabled on this device (commands.disabled)",
                    "fix": "remove model/set from commands.disabled in the agent config",
                },
                outcome="disabled",
            )
            return
        if len(payload) > self.cfg.ota.max_bytes + MAX_HEADER + 12:
            # Refused at once: an oversize message is never queued.
            self._answer(
                payload,
                {
                    "ok": False,
                    "reason": "oversize",
                    "error": f"update message is {len(payload)} bytes, over the device's "
                    f"{self.cfg.ota.max_bytes}-byte model limit",
                    "fix": "shrink the model or raise ota.max_bytes in the agent config",
                },
                outcome="refused",
            )
            return
        with self._pending_lock:
            busy = self._pending_bytes + len(payload) > self.cfg.ota.max_pending_bytes
            if not busy:
                self._pending_bytes += len(payload)
        if busy:
            self._answer(
                payload,
                {
                    "ok": False,
                    "reason": "busy",
                    "error": "other model updates are in progress",
                    "fix": "wait for their results on cmd/result, then push again",
                },
                outcome="refused",
            )
            return
        self._updates.put(payload)

    def _update_loop(self) -> None:
        while True:
            payload = self._updates.get()
            if payload is None:
                return
            with self._pending_lock:
                self._pending_bytes = max(0, self._pending_bytes - len(payload))
            try:
                self._update_one(payload)
            except Exception:  # one message must never cost the device its update channel
                log.exception("model update message could not be answered")

    def _update_one(self, payload: bytes) -> None:
        started = time.monotonic()
        try:
            answer = self.handler.handle(payload)
        except Exception as exc:  # handle() never raises; this is the last line of defence
            log.exception("model update crashed")
            answer = {"ok": False, "reason": "install_failed", "error": f"{type(exc).__name__}: {exc}"}
        answer.setdefault("elapsed_ms", round((time.monotonic() - started) * 1000.0, 1))
        self.last_update = {k: answer.get(k) for k in ("id", "ok", "reason", "error")}
        if answer.get("ok"):
            self.last_update["version"] = (answer.get("result") or {}).get("version")
        outcome = (
            "done"
            if answer.get("ok")
            else ("malformed" if answer.get("reason") == "malformed" else "refused")
        )
        self._answer(payload, answer, outcome=outcome)
        self.agent.publish_status()

    def _answer(self, payload: bytes, answer: dict[str, Any], outcome: str) -> None:
        from edge.contract import messages
        from edge.ota.manifest import header_id

        answer.setdefault("id", header_id(payload))
        answer.setdefault("action", ACTION)
        level = logging.INFO if answer.get("ok") else logging.WARNING
        log.log(
            level,
            "model update %s: %s",
            answer.get("id"),
            "installed " + str((answer.get("result") or {}).get("version"))
            if answer.get("ok")
            else f"refused ({answer.get('reason')}): {answer.get('error')}",
        )
        detail = {k: answer[k] for k in ("reason",) if k in answer}
        result = answer.get("result") or {}
        for k in ("version", "sha256", "previous_sha256", "rolled_back"):
            if k in result:
                detail[k] = result[k]
        self.audit.record(
            action=ACTION,
            cmd_id=answer.get("id"),
            topic=self.topic_model_set,
            outcome=outcome,
            payload=payload,
            error=answer.get("error"),
            detail=detail or None,
        )
        body = messages.envelope(self.agent.device, **answer)
        self.agent.outbox.send(self.agent.topics.cmd_result, body, qos=1)

    # --- status ---------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        prev = self.store.previous()
        return {
            "model_version": self.current.version if self.current else None,
            "ota": {
                "enabled": self.cfg.ota.enabled,
                "trusted_keys": len(self.cfg.ota.public_keys),
                "installed": self.current.describe() if self.current else None,
                "previous": prev.describe() if prev else None,
                "last_update": self.last_update,
                "recovery": list(self.notes),
            },
            "broker": self.broker_redacted,
            "commands_disabled": list(self.cfg.commands.disabled),
        }
