"""Commands on ``<prefix>/<device>/cmd``: a registry of action name -> handler.

Handlers run on a worker thread (a reload or a benchmark must not stall the
MQTT network thread) and return a JSON-able dict, or raise CommandError.
Whatever arrives — not JSON, not an object, unknown action, a handler bug —
ends as an ``ok: false`` result on ``cmd/result``, never as a dead agent.
Other features register their own actions: ``agent.commands.register("x", fn)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.contract.payload import PayloadError, loads
from edge.errors import EdgeError

log = logging.getLogger("edge.agent.cmd")

# Commands are small JSON objects; a larger one is refused before it is parsed.
MAX_COMMAND_BYTES = 64 * 1024

Handler = Callable[[Any, dict[str, Any]], dict[str, Any]]  # (agent, command) -> result


class CommandError(Exception):
    """A command that cannot be carried out; the message goes into the error result."""


class CommandRegistry:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def register(self, action: str, handler: Handler) -> None:
        self.handlers[action] = handler

    def __contains__(self, action: object) -> bool:
        return action in self.handlers

    def dispatch(
        self, agent: Any, payload: bytes
    ) -> tuple[Any, Any, bool, dict[str, Any] | None, str | None]:
        """-> (id, action, ok, result, error). Never raises."""
        try:
            cmd = loads(payload, what="command", max_bytes=MAX_COMMAND_BYTES)
        except PayloadError as exc:
            return None, None, False, None, f'{exc.what}; send {{"id": ..., "action": ...}}'
        if not isinstance(cmd, dict):
            return None, None, False, None, f"command must be a JSON object, received {type(cmd).__name__}"
        cid, action = cmd.get("id"), cmd.get("action")
        if not isinstance(action, str) or not action:
            return (
                cid,
                action,
                False,
                None,
                "command has no 'action' (expected one of: " + ", ".join(sorted(self.handlers)) + ")",
            )
        handler = self.handlers.get(action)
        if handler is None:
            return (
                cid,
                action,
                False,
                None,
                f"unknown action {action!r} (expected one of: " + ", ".join(sorted(self.handlers)) + ")",
            )
        try:
            return cid, action, True, handler(agent, cmd), None
        except CommandError as exc:
            return cid, action, False, None, str(exc)
        except Exception as exc:  # a handler bug must not kill the agent
            log.exception("command %r failed", action)
            return cid, action, False, None, f"{type(exc).__name__}: {exc}"


def _id_and_action(payload: bytes) -> tuple[Any, Any]:
    try:
        cmd = loads(payload, what="command", max_bytes=MAX_COMMAND_BYTES)
    except PayloadError:
        return None, None
    return (cmd.get("id"), cmd.get("action")) if isinstance(cmd, dict) else (None, None)


class CommandWorker:
    """Runs commands one at a time, off the MQTT thread, and publishes their results."""

    def __init__(self, agent: Any, registry: CommandRegistry, publish: Callable[..., None]) -> None:
        self.agent = agent
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
                cid, action, ok, result, error = self.registry.dispatch(self.agent, payload)
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


def ping(agent: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    return {
        "pong": True,
        "agent_version": agent.version,
        "uptime_s": round(time.monotonic() - agent.started_mono, 3),
        "seq": agent.last_seq,
    }


def reload(agent: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    try:
        model = agent.reload_model()
    except Exception as exc:
        raise CommandError(f"reload failed, the previous model keeps running: {exc}") from exc
    return {"model_path": str(model.path), "model_sha256": model.sha256}


SETTABLE = {"top_k": int, "threshold": float, "iou": float, "max_detections": int}


def set_(agent: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in cmd.items() if k not in ("id", "action")}
    if isinstance(params.get("values"), dict):  # {"action":"set","values":{"top_k":3}} also accepted
        params = params["values"]
    if not params:
        raise CommandError("set needs at least one of: " + ", ".join(SETTABLE) + ' (e.g. {"top_k": 3})')
    unknown = sorted(set(params) - set(SETTABLE))
    if unknown:
        raise CommandError(f"cannot set {', '.join(unknown)}; settable: {', '.join(SETTABLE)}")
    if "top_k" in params:
        v = params["top_k"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
            raise CommandError(f"top_k must be an integer in 1..1000, received {v!r}")
    if "threshold" in params:
        v = params["threshold"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise CommandError(f"threshold must be a number in 0..1, received {v!r}")
    if "iou" in params:
        v = params["iou"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise CommandError(f"iou must be a number in 0..1, received {v!r}")
    if "max_detections" in params:
        v = params["max_detections"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000:
            raise CommandError(f"max_detections must be an integer in 1..10000, received {v!r}")
    return agent.apply_settings({k: SETTABLE[k](v) for k, v in params.items()})


def bench(agent: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    """``edge.bench.run_for_agent(model, params, device=...)`` on the loaded model, when edge-bench is in the build.

    The report goes to ``<prefix>/<device>/bench`` and is the command's result.
    """
    try:
        spec = importlib.util.find_spec("edge.bench")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise CommandError("bench not available in this build (edge.bench is not installed)")
    mod = importlib.import_module("edge.bench")
    fn = getattr(mod, "run_for_agent", None)
    if fn is None:
        raise CommandError("bench not available in this build (edge.bench has no run_for_agent)")
    params = {k: v for k, v in cmd.items() if k not in ("id", "action")}
    try:
        with agent.pipeline.lock:  # the interpreter is not thread-safe: inferences wait meanwhile
            report = fn(agent.pipeline.model, params, device=agent.device)
    except EdgeError as exc:
        raise CommandError(f"{exc.what} (fix: {exc.fix})" if exc.fix else exc.what) from exc
    agent.publish_bench(report)
    return report if isinstance(report, dict) else {"report": report}


def default_registry() -> CommandRegistry:
    reg = CommandRegistry()
    reg.register("ping", ping)
    reg.register("reload", reload)
    reg.register("set", set_)
    reg.register("bench", bench)
    return reg
