"""The agent's side of ``model/set``: verify, then install / shadow / activate / drop, answer.

Independent of the MQTT client in use. The stage comes from the signed manifest (edge.ota.manifest):

* ``install``: the model store installs it (journaled, health-checked, switched; rollback on failure);
* ``shadow``: the store writes and guards it under ``shadow/``, the :class:`ShadowHooks` load it beside
  the serving model (a test inference first) and start comparing; a failure changes nothing;
* ``activate`` naming the candidate: installed from its file exactly as an ``install`` would be (so a
  restart keeps it and the model it replaced is the rollback target); naming the previous model: the
  store's rollback; naming what already serves: nothing to do (ok: a repeated activate is harmless);
* ``drop`` naming the candidate: stops and discards it.

Every accepted stage moves the replay mark, so no signed message can be sent twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from edge.errors import EdgeError
from edge.ota.install import InstalledModel, InstallResult, ModelStore
from edge.ota.manifest import (
    Manifest,
    UpdateRefusedError,
    VerifiedUpdate,
    header_id,
    read_header,
    verify_message,
)

if TYPE_CHECKING:
    from edge.agent.config import OtaConfig

ACTION = "model/set"

log = logging.getLogger("edge.ota")


class ShadowHooks(Protocol):
    """What the handler needs of the agent's shadow mode (edge.agent.shadow.ShadowRunner)."""

    def start(self, candidate: InstalledModel, manifest: Manifest) -> None:
        """Load ``candidate`` beside the serving model, test it, and compare from now on (replacing any
        earlier candidate); raise (and change nothing) when it fails."""

    def stop(self) -> None:
        """Stop comparing and discard the candidate."""

    def candidate(self) -> tuple[InstalledModel, Manifest] | None:
        """The candidate shadowing now, and the manifest it came with."""


def header_stage(payload: bytes) -> str | None:
    """The stage an update asks for, best effort (for answering even refused updates)."""
    try:
        header, _ = read_header(payload)
    except UpdateRefusedError:
        return None
    manifest = header.get("manifest")
    stage = manifest.get("stage", "install") if isinstance(manifest, dict) else None
    return stage if isinstance(stage, str) and len(stage) <= 16 else None


class UpdateHandler:
    """Turns one ``model/set`` payload into an installed model (or a refusal) and a cmd/result answer."""

    def __init__(
        self,
        config: OtaConfig,
        store: ModelStore,
        *,
        device: str,
        current: Callable[[], InstalledModel | None],
        activate: Callable[[InstalledModel | None], None] | None = None,
        shadow: ShadowHooks | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.device = device
        self.current = current
        self.activate = activate
        self.shadow = shadow
        self.last: InstallResult | None = None

    def public_keys(self) -> list[Any]:
        """The trusted keys, read again for each update (a few file reads).

        The agent checked them at start-up; a ``.pub`` removed, emptied or replaced since then takes
        effect at the next update without a restart (revoking a key works), and an update when none of
        them can be read any more is refused as ``no_key`` naming each file, never ``install_failed``.
        """
        from edge.ota.keys import load_public_key

        keys: list[Any] = []
        unreadable: list[str] = []
        for i, key in enumerate(self.config.public_keys):
            try:
                keys.append(load_public_key(key))
            except EdgeError as exc:
                unreadable.append(f"ota.public_keys[{i}]: {exc.what}")
        if unreadable:
            log.warning("trusted update keys unusable since start-up: %s", "; ".join(unreadable))
        if unreadable and not keys:
            raise UpdateRefusedError(
                "no_key",
                "none of the trusted update keys can be used any more (they could at start-up): "
                + "; ".join(unreadable),
                "put back the .pub file written by edge-flash keygen (or fix ota.public_keys / "
                "--update-key and restart the agent); until then every update is refused",
            )
        return keys

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Never raises: every outcome is an answer (``ok``, ``stage``, ``reason``, ``error``, ``fix``)."""
        started = time.perf_counter()
        cmd_id = header_id(payload)
        stage = header_stage(payload)
        try:
            if not self.config.enabled:
                raise UpdateRefusedError(
                    "no_key",
                    "model updates are disabled on this device (ota.enabled false)",
                    "set ota.enabled: true in the agent config",
                )
            update = verify_message(
                payload, self.public_keys(), device=self.device, max_bytes=self.config.max_bytes
            )
            stage = update.manifest.stage
            if stage == "shadow":
                return self._shadow(update, started)
            if stage == "drop":
                return self._drop(update, started)
            if stage == "activate":
                result = self._activate(update)
                if isinstance(result, dict):
                    return self._answer(
                        cmd_id, True, stage=stage, result=result, elapsed_ms=self._ms(started)
                    )
            else:
                result = self.store.install(update, current=self.current(), activate=self.activate)
        except UpdateRefusedError as exc:
            return self._answer(
                cmd_id,
                False,
                stage=stage,
                reason=exc.reason,
                error=exc.what,
                fix=exc.fix,
                elapsed_ms=self._ms(started),
            )
        except EdgeError as exc:  # e.g. a public key file that cannot be read
            return self._answer(
                cmd_id,
                False,
                stage=stage,
                reason="install_failed",
                error=exc.what,
                fix=exc.fix,
                elapsed_ms=self._ms(started),
            )
        self.last = result
        detail = result.describe()
        if result.ok:
            assert result.model is not None
            return self._answer(
                cmd_id,
                True,
                stage=stage,
                result={**detail, "model_path": result.model.path, "labels_path": result.model.labels_path},
                elapsed_ms=self._ms(started),
            )
        return self._answer(
            cmd_id,
            False,
            stage=stage,
            reason=result.reason,
            error=result.error,
            fix=result.fix,
            result=detail,
            elapsed_ms=self._ms(started),
        )

    @staticmethod
    def _ms(started: float) -> float:
        return (time.perf_counter() - started) * 1000.0

    def _hooks(self) -> ShadowHooks:
        if self.shadow is None:
            raise UpdateRefusedError(
                "shadow_failed",
                "this agent runs no shadow mode (no shadow runner)",
                "run edge-agent (it has one), or send stage install",
            )
        return self.shadow

    def _shadow(self, update: VerifiedUpdate, started: float) -> dict[str, Any]:
        m = update.manifest
        hooks = self._hooks()
        self.store.check_replay(m)
        running = hooks.candidate()
        candidate = self.store.stage_candidate(update)
        try:
            hooks.start(candidate, m)
        except Exception as exc:
            self.store.discard_candidates(keep=(running[0],) if running else ())
            raise UpdateRefusedError(
                "shadow_failed",
                f"candidate {m.version} failed to load or run beside the active model: "
                f"{getattr(exc, 'what', exc)}; the active model serves on",
                getattr(exc, "fix", "") or "check the model with edge-bench on a test device",
            ) from exc
        self.store.discard_candidates(keep=(candidate,))  # the candidate it replaced, if any
        self.store.note_signed(m.created)
        current = self.current()
        return self._answer(
            update.id,
            True,
            stage="shadow",
            result={
                "version": m.version,
                "sha256": m.sha256,
                "active_sha256": current.sha256 if current else None,
                "fraction": m.shadow_fraction,
                "window_s": m.shadow_window_s,
                "replaced_sha256": running[0].sha256 if running else None,
            },
            elapsed_ms=self._ms(started),
        )

    def _drop(self, update: VerifiedUpdate, started: float) -> dict[str, Any]:
        m = update.manifest
        hooks = self._hooks()
        self.store.check_replay(m)
        running = hooks.candidate()
        if running is None or running[0].sha256 != m.sha256:
            raise UpdateRefusedError(
                "no_candidate",
                f"no candidate with sha256 {m.sha256[:12]}... is shadowing here"
                + (f" (the candidate is {running[0].sha256[:12]}...)" if running else ""),
                "see the status' shadow key for the candidate shadowing, if any",
            )
        hooks.stop()
        self.store.discard_candidates()
        self.store.note_signed(m.created)
        return self._answer(
            update.id,
            True,
            stage="drop",
            result={"sha256": m.sha256, "version": running[0].version, "dropped": True},
            elapsed_ms=self._ms(started),
        )

    def _activate(self, update: VerifiedUpdate) -> InstallResult | dict[str, Any]:
        m = update.manifest
        current = self.current()
        running = self.shadow.candidate() if self.shadow is not None else None
        shadowing = running is not None and running[0].sha256 == m.sha256
        if current is not None and current.sha256 == m.sha256:
            # Serving it already (an activate sent again after its answer was lost, or a candidate
            # identical to the active model): nothing to install, nothing to lose.
            self.store.check_replay(m)
            if shadowing and self.shadow is not None:
                self.shadow.stop()
                self.store.discard_candidates()
            self.store.note_signed(m.created)
            return {"version": current.version, "sha256": current.sha256, "already_active": True}
        if running is not None and shadowing:
            candidate, shadow_manifest = running
            try:
                model = Path(candidate.path).read_bytes()
                labels = Path(candidate.labels_path).read_bytes() if candidate.labels_path else None
            except OSError as exc:
                raise UpdateRefusedError(
                    "install_failed",
                    f"cannot read the shadow candidate {candidate.path}: {exc}",
                    "send the candidate again (stage shadow), then activate it",
                ) from exc
            # The candidate's own signed manifest (version, labels), with the activation's signing time:
            # the install's replay check and mark are the activate message's.
            manifest = msgspec.structs.replace(shadow_manifest, created=m.created, stage="install")
            result = self.store.install(
                VerifiedUpdate(update.id, manifest, model, labels), current=current, activate=self.activate
            )
            if result.ok and self.shadow is not None:
                self.shadow.stop()
                self.store.discard_candidates()
            return result
        previous = self.store.previous()
        if previous is not None and previous.sha256 == m.sha256:
            return self.store.rollback(m, current=current, activate=self.activate)
        raise UpdateRefusedError(
            "no_candidate",
            f"activate names sha256 {m.sha256[:12]}..., which is neither the candidate shadowing "
            f"({running[0].sha256[:12] + '...' if running else 'none'}) nor the previous model "
            f"({previous.sha256[:12] + '...' if previous else 'none'})",
            "send the model with stage shadow first, or name the previous model to roll back",
        )

    @staticmethod
    def _answer(cmd_id: str | None, ok: bool, **fields: Any) -> dict[str, Any]:
        answer: dict[str, Any] = {"id": cmd_id, "action": ACTION, "ok": ok}
        answer.update({k: v for k, v in fields.items() if v is not None})
        if "elapsed_ms" in answer:
            answer["elapsed_ms"] = round(answer["elapsed_ms"], 1)
        return answer


def current_from_path(path: str | Path, version: str | None = None) -> InstalledModel:
    """Describe a configured model file as the 'current' model of an update."""
    from edge.digest import sha256_file

    return InstalledModel(path=str(path), sha256=sha256_file(path), version=version)
