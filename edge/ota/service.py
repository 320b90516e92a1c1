"""The device's ``model/set`` service: queue, verify + install (edge.ota.handler), answer, audit.

Built by the agent's app with explicit collaborators: the model slot (what serves, and how to
switch), the journaled model store, a ``send(topic, body)`` function (the outbox: spooled,
QoS 1), the audit log, the device's topics and the ``[ota]`` config. Updates are handled one at
a time on the ``edge-ota`` thread, so a multi-megabyte verification never stalls the MQTT network
thread; the queue in front of it is bounded by bytes, not count (many small bad updates queue
up, two huge ones do not).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edge.agent.audit import action_allowed
from edge.contract import messages
from edge.ota.handler import ACTION, ShadowHooks, UpdateHandler, current_from_path, header_stage
from edge.ota.install import InstalledModel, ModelStore
from edge.ota.manifest import MAX_HEADER, header_id

if TYPE_CHECKING:
    from edge.agent.audit import AuditLog
    from edge.agent.config import OtaConfig
    from edge.agent.slot import ModelSlot
    from edge.transport.topics import Topics

log = logging.getLogger("edge.ota.service")


def max_message_bytes(config: OtaConfig) -> int:
    """The largest ``model/set`` message worth receiving: the model limit, the signed header, framing."""
    return int(config.max_bytes) + MAX_HEADER + 12


class OtaService:
    def __init__(
        self,
        config: OtaConfig,
        *,
        slot: ModelSlot,
        store: ModelStore,
        send: Callable[[str, dict[str, Any]], object],
        audit: AuditLog,
        topics: Topics,
        disabled: Sequence[str] = (),
        on_done: Callable[[], None] | None = None,
        shadow: ShadowHooks | None = None,
    ) -> None:
        self.config = config  # the [ota] section
        self.slot = slot
        self.store = store
        self.send = send
        self.audit = audit
        self.topics = topics
        self.disabled = tuple(disabled)
        self.on_done = on_done  # after every update, installed or not (the app publishes its status)
        self.handler = UpdateHandler(
            config, store, device=topics.device, current=self.current, activate=slot.activate, shadow=shadow
        )
        self._updates: queue.Queue[bytes | None] = queue.Queue()
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last_update: dict[str, Any] | None = None

    def current(self) -> InstalledModel | None:
        """What serves now, as the model store sees it (the configured file when no update is installed)."""
        if self.slot.installed is not None:
            return self.slot.installed
        path = self.slot.configured_path
        return current_from_path(path) if path is not None else None

    # --- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-ota", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._updates.put(None)
            self._thread.join(5)
            self._thread = None

    # --- model/set (network thread) ---------------------------------------------------------------------
    def submit(self, payload: bytes) -> None:
        """Called for each ``model/set`` message: refused at once, or queued for the ``edge-ota`` thread."""
        if not action_allowed(self.disabled, ACTION):
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
        if len(payload) > max_message_bytes(self.config):
            # Refused at once: an oversize message is never queued.
            self._answer(
                payload,
                {
                    "ok": False,
                    "reason": "oversize",
                    "error": f"update message is {len(payload)} bytes, over the device's "
                    f"{self.config.max_bytes}-byte model limit",
                    "fix": "shrink the model or raise ota.max_bytes in the agent config",
                },
                outcome="refused",
            )
            return
        with self._pending_lock:
            busy = self._pending_bytes + len(payload) > self.config.max_pending_bytes
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

    # --- the edge-ota thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            payload = self._updates.get()
            if payload is None:
                return
            with self._pending_lock:
                self._pending_bytes = max(0, self._pending_bytes - len(payload))
            try:
                self.handle(payload)
            except Exception:  # one message must never cost the device its update channel
                log.exception("model update message could not be answered")

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Verify, install, answer and audit one update (on the calling thread); returns the answer."""
        started = time.monotonic()
        try:
            answer = self.handler.handle(payload)
        except Exception as exc:  # handle() never raises; this is the last line of defence
            log.exception("model update crashed")
            answer = {"ok": False, "reason": "install_failed", "error": f"{type(exc).__name__}: {exc}"}
        answer.setdefault("elapsed_ms", round((time.monotonic() - started) * 1000.0, 1))
        self.last_update = {k: answer.get(k) for k in ("id", "ok", "stage", "reason", "error")}
        if answer.get("ok"):
            self.last_update["version"] = (answer.get("result") or {}).get("version")
        self._answer(
            payload,
            answer,
            outcome="done"
            if answer.get("ok")
            else ("malformed" if answer.get("reason") == "malformed" else "refused"),
        )
        if self.on_done is not None:
            try:
                self.on_done()
            except Exception:
                log.exception("after-update callback failed")
        return answer

    def _answer(self, payload: bytes, answer: dict[str, Any], outcome: str) -> None:
        answer.setdefault("id", header_id(payload))
        answer.setdefault("action", ACTION)
        answer.setdefault("stage", header_stage(payload))
        level = logging.INFO if answer.get("ok") else logging.WARNING
        log.log(
            level,
            "model update %s: %s",
            answer.get("id"),
            f"{answer.get('stage')} ok: " + str((answer.get("result") or {}).get("version"))
            if answer.get("ok")
            else f"refused ({answer.get('reason')}): {answer.get('error')}",
        )
        detail: dict[str, Any] = {k: answer[k] for k in ("stage", "reason") if k in answer}
        result = answer.get("result") or {}
        for k in ("version", "sha256", "previous_sha256", "rolled_back"):
            if k in result:
                detail[k] = result[k]
        self.audit.record(
            action=ACTION,
            cmd_id=answer.get("id"),
            topic=self.topics.model_set,
            outcome=outcome,
            payload=payload,
            error=answer.get("error"),
            detail=detail or None,
        )
        self.send(self.topics.cmd_result, messages.envelope(self.topics.device, **answer))

    # --- status ------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status message's model version and ``ota`` section."""
        installed = self.slot.installed
        prev = self.store.previous()
        return {
            "model_version": installed.version if installed else None,
            "ota": {
                "enabled": self.config.enabled,
                "trusted_keys": len(self.config.public_keys),
                "installed": installed.describe() if installed else None,
                "previous": prev.describe() if prev else None,
                "last_update": self.last_update,
                "recovery": list(self.slot.notes),
            },
        }
