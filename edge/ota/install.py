"""The device's model store: atomic install, health check, switch, rollback and crash recovery.

Layout under ``<state_dir>/models``::

    <version>-<sha12>.tflite   installed models (the active one and the previous one are kept)
    active.json                pointer to the model the agent must run (absent: the configured model)
    previous.json              pointer to the model it replaced (what a rollback goes back to)
    update.journal             exists only while an update is in flight
    shadow/                    the candidate of shadow mode (stage ``shadow``): never served; the agent
                               removes it at start-up (shadow mode is not kept across a restart)

Every pointer and journal write is write-temp + fsync + rename + fsync(dir), so
a power cut leaves either the old or the new file, never half of one. The
journal is written before the first byte of the new model, so an agent
killed at any point of an update finds it at start-up (:meth:`ModelStore.recover`)
and goes back to the model it ran before: an update is committed only once
the agent has loaded the new model and run a test inference with it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.contract.messages import utc_iso
from edge.digest import sha256_file
from edge.model.guard import GuardLimits, Verdict, default_limits, guard_file
from edge.ota.manifest import REFUSAL_REASONS, Manifest, UpdateRefusedError, VerifiedUpdate, signed_time

# Test seam for crash-safety tests: ``EDGE_OTA_PAUSE_AT=<phase>`` makes an install write
# ``<state>/models/paused-at-<phase>`` and sleep there, so a test can SIGKILL the agent at that exact point.
PAUSE_ENV = "EDGE_OTA_PAUSE_AT"
PHASES = ("journaled", "written", "health_checked", "switched", "activated")


@dataclass(frozen=True)
class InstalledModel:
    """A model the agent can run, with what the update said about it."""

    path: str
    sha256: str
    version: str | None = None
    labels_path: str | None = None
    installed_at: str | None = None
    signed_at: str | None = None  # the manifest's ``created``: what the replay check compares

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstalledModel:
        fields: dict[str, Any] = {
            k: data.get(k) for k in ("path", "sha256", "version", "labels_path", "installed_at", "signed_at")
        }
        return cls(**fields)


@dataclass(frozen=True)
class InstallResult:
    ok: bool
    reason: str | None  # one of REFUSAL_REASONS when not ok
    error: str
    fix: str
    model: InstalledModel | None  # what serves now (None: the agent's configured model)
    previous: InstalledModel | None
    rolled_back: bool = False
    verdict: dict[str, Any] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "version": self.model.version if self.model else None,
            "sha256": self.model.sha256 if self.model else None,
            "previous_sha256": self.previous.sha256 if self.previous else None,
            "rolled_back": self.rolled_back,
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }
        if not self.ok:
            out.update(reason=self.reason, error=self.error, fix=self.fix)
        if self.verdict:
            out["health_check"] = self.verdict
        return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:40] or "model"


class ModelStore:
    """Installs verified updates; one update at a time."""

    def __init__(
        self,
        state_dir: str | Path,
        limits: GuardLimits | None = None,
        health_check: Callable[[Path, GuardLimits], Verdict] = guard_file,
    ) -> None:
        self.dir = Path(state_dir) / "models"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.limits = limits or default_limits()
        self.health_check = health_check
        self._lock = threading.Lock()

    # -- pointers --------------------------------------------------------------------------------
    @property
    def journal_path(self) -> Path:
        return self.dir / "update.journal"

    def _read_pointer(self, name: str) -> InstalledModel | None:
        try:
            return InstalledModel.from_json(json.loads((self.dir / name).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_pointer(self, name: str, model: InstalledModel | None) -> None:
        path = self.dir / name
        if model is None:
            if path.exists():
                path.unlink()
                _fsync_dir(self.dir)
            return
        atomic_write(path, json.dumps(model.describe(), indent=1).encode())

    def active(self) -> InstalledModel | None:
        """The installed model the agent must run, or None for its configured model."""
        return self._read_pointer("active.json")

    def previous(self) -> InstalledModel | None:
        return self._read_pointer("previous.json")

    def newest_signed_at(self) -> str | None:
        """Signing time of the newest update ever committed here (older updates are replays)."""
        try:
            return str(json.loads((self.dir / "replay.json").read_text())["newest_signed_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def set_active(self, model: InstalledModel | None) -> None:
        """Point the agent at ``model`` (None: its configured model), e.g. when the installed one stopped loading."""
        self._write_pointer("active.json", model)

    def check_replay(self, manifest: Manifest) -> None:
        """Refuse (``replayed``) a message signed no later than the newest one accepted here."""
        newest = self.newest_signed_at()
        if newest is not None and signed_time(manifest.created) <= signed_time(newest):
            raise UpdateRefusedError(
                "replayed",
                f"{manifest.stage} {manifest.version} was signed at {manifest.created}, not after the last "
                f"update accepted here (signed at {newest}): an old update message sent again?",
                "push-model and edge-fleet sign a fresh manifest every time: send it again",
            )

    def note_signed(self, created: str) -> None:
        """Remember ``created`` as the newest accepted signing time (what :meth:`check_replay` compares)."""
        atomic_write(self.dir / "replay.json", json.dumps({"newest_signed_at": created}).encode())

    # -- shadow candidates ------------------------------------------------------------------------------
    @property
    def shadow_dir(self) -> Path:
        return self.dir / "shadow"

    def stage_candidate(self, update: VerifiedUpdate) -> InstalledModel:
        """Write a shadow candidate under ``shadow/`` and guard it; raise ``shadow_failed`` when it fails.

        The active model's files and pointers are not touched: the candidate only runs beside it."""
        m = update.manifest
        stem = f"{_safe(m.version)}-{m.sha256[:12]}"
        d = self.shadow_dir
        candidate = InstalledModel(
            path=str(d / f"{stem}.tflite"),
            sha256=m.sha256,
            version=m.version,
            labels_path=str(d / f"{stem}.labels.txt") if update.labels else None,
            installed_at=utc_iso(),
            signed_at=m.created,
        )
        try:
            d.mkdir(exist_ok=True)
            for path, data in ((candidate.path, update.model), (candidate.labels_path, update.labels)):
                if path is not None and data is not None:
                    tmp = d / f".incoming-{Path(path).name}"
                    tmp.write_bytes(data)
                    os.replace(tmp, path)
        except OSError as exc:
            raise UpdateRefusedError(
                "shadow_failed",
                f"writing the shadow candidate to {d} failed: {exc}",
                "free some disk space on the device and send it again",
            ) from exc
        if sha256_file(candidate.path) != m.sha256:
            self._remove(candidate)
            raise UpdateRefusedError(
                "shadow_failed",
                "the candidate file on disk does not match the update (disk error?)",
                "check the device's storage and send it again",
            )
        verdict = self.health_check(Path(candidate.path), self.limits)
        if not verdict.ok:
            self._remove(candidate)
            raise UpdateRefusedError(
                "shadow_failed",
                f"candidate {m.version} failed its health check ({verdict.stage}): {verdict.reason}; "
                "the active model serves on",
                verdict.fix,
            )
        return candidate

    @staticmethod
    def _remove(model: InstalledModel) -> None:
        """Delete a refused candidate's files (a candidate still shadowing keeps its own)."""
        for p in (model.path, model.labels_path):
            if p:
                Path(p).unlink(missing_ok=True)

    def discard_candidates(self, keep: tuple[InstalledModel, ...] = ()) -> None:
        """Remove shadow candidates' files, but ``keep``'s (the candidate still shadowing)."""
        kept = {p for m in keep for p in (m.path, m.labels_path) if p}
        if self.shadow_dir.is_dir():
            for p in self.shadow_dir.iterdir():
                if str(p) not in kept:
                    p.unlink()

    def _pause(self, phase: str) -> None:
        if os.environ.get(PAUSE_ENV) == phase:
            (self.dir / f"paused-at-{phase}").write_text(str(os.getpid()))
            time.sleep(3600)

    # -- start-up ---------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Undo an update that did not commit, and make sure the active pointer names a valid model.

        Call before loading the model at start-up; returns notes for the status message.
        """
        notes: list[str] = []
        journal = None
        if self.journal_path.exists():
            try:
                journal = json.loads(self.journal_path.read_text())
            except (OSError, ValueError):
                journal = {}
        if journal is not None:
            before = journal.get("previous_active")
            restored = InstalledModel.from_json(before) if before else None
            self._write_pointer("active.json", restored)
            if "previous_previous" in journal:
                pp = journal["previous_previous"]
                self._write_pointer("previous.json", InstalledModel.from_json(pp) if pp else None)
            candidate = journal.get("candidate") or {}
            keep = {m.path for m in (restored, self.previous()) if m}
            for key in ("path", "labels_path"):
                p = candidate.get(key)
                if p and p not in keep and Path(p).exists() and Path(p).parent == self.dir:
                    Path(p).unlink()
            self.journal_path.unlink()
            _fsync_dir(self.dir)
            notes.append(
                f"an update to version {candidate.get('version')!r} was interrupted at "
                f"phase {journal.get('phase', 'unknown')!r}; rolled back to "
                + (
                    f"version {restored.version!r}"
                    if restored and restored.version
                    else (restored.path if restored else "the configured model")
                )
            )
        for tmp in self.dir.glob(".incoming-*"):
            tmp.unlink()
        for marker in self.dir.glob("paused-at-*"):
            marker.unlink()
        active = self.active()
        if active is not None and not self._valid(active):
            fallback = self.previous()
            if fallback is not None and self._valid(fallback):
                self._write_pointer("active.json", fallback)
                notes.append(
                    f"active model {active.path} is missing or corrupt; went back to {fallback.path}"
                )
            else:
                self._write_pointer("active.json", None)
                notes.append(
                    f"active model {active.path} is missing or corrupt; went back to the configured model"
                )
        return notes

    @staticmethod
    def _valid(model: InstalledModel) -> bool:
        try:
            return sha256_file(model.path) == model.sha256
        except OSError:
            return False

    # -- install ------------------------------------------------------------------------------------
    def install(
        self,
        update: VerifiedUpdate,
        *,
        current: InstalledModel | None,
        activate: Callable[[InstalledModel | None], None] | None = None,
    ) -> InstallResult:
        """Write, health-check and switch to ``update``; on any failure keep or restore ``current``.

        ``activate(model)`` is the agent's hook to load ``model`` in-process and run a test inference
        (``None`` means its configured model); it raises if that fails, and is called again with
        ``current`` to restore it.
        """
        if not self._lock.acquire(blocking=False):
            raise UpdateRefusedError(
                "busy",
                "another model update is being installed",
                "wait for its result on cmd/result, then push again",
            )
        try:
            return self._install(update, current, activate)
        finally:
            self._lock.release()

    def _write_model_file(self, name: str, data: bytes) -> Path:
        tmp = self.dir / f".incoming-{name}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        final = self.dir / name
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        return final

    def _install(
        self,
        update: VerifiedUpdate,
        current: InstalledModel | None,
        activate: Callable[[InstalledModel | None], None] | None,
    ) -> InstallResult:
        m = update.manifest
        self.check_replay(m)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        stem = f"{_safe(m.version)}-{m.sha256[:12]}"
        candidate = InstalledModel(
            path=str(self.dir / f"{stem}.tflite"),
            sha256=m.sha256,
            version=m.version,
            labels_path=str(self.dir / f"{stem}.labels.txt") if update.labels else None,
            installed_at=utc_iso(),
            signed_at=m.created,
        )
        previous_previous, active = self.previous(), self.active()
        journal = {
            "phase": "journaled",
            "candidate": candidate.describe(),
            "started": utc_iso(),
            "previous_active": active.describe() if active else None,
            "previous_previous": previous_previous.describe() if previous_previous else None,
        }
        atomic_write(self.journal_path, json.dumps(journal).encode())
        self._pause("journaled")

        def fail(
            reason: str,
            error: str,
            fix: str,
            *,
            rolled_back: bool = False,
            verdict: dict[str, Any] | None = None,
        ) -> InstallResult:
            self.recover()  # the journal puts the pointers back and removes the candidate
            timings["total"] = (time.perf_counter() - t0) * 1000.0
            return InstallResult(False, reason, error, fix, current, current, rolled_back, verdict, timings)

        try:
            self._write_model_file(Path(candidate.path).name, update.model)
            if update.labels is not None and candidate.labels_path:
                self._write_model_file(Path(candidate.labels_path).name, update.labels)
        except OSError as exc:
            return fail(
                "install_failed",
                f"writing the model to {self.dir} failed: {exc}",
                "free some disk space on the device and push again",
            )
        timings["write"] = (time.perf_counter() - t0) * 1000.0
        self._pause("written")

        # The file on disk, not the bytes in memory, is what will run: check that one.
        t = time.perf_counter()
        if sha256_file(candidate.path) != m.sha256:
            return fail(
                "install_failed",
                "the model file on disk does not match the update (disk error?)",
                "check the device's storage and push again",
            )
        verdict = self.health_check(Path(candidate.path), self.limits)
        timings["health_check"] = (time.perf_counter() - t) * 1000.0
        if not verdict.ok:
            failed_at = time.perf_counter()
            result = fail(
                "health_check",
                f"model {m.version} failed its health check ({verdict.stage}): "
                f"{verdict.reason}; still serving the previous model",
                verdict.fix,
                verdict=verdict.describe(),
            )
            # The previous model never stopped serving: nothing to reload.
            timings["rollback"] = (time.perf_counter() - failed_at) * 1000.0
            return result
        self._pause("health_checked")

        journal["phase"] = "switched"
        atomic_write(self.journal_path, json.dumps(journal).encode())
        self._write_pointer("previous.json", current)
        self._write_pointer("active.json", candidate)
        self._pause("switched")

        if activate is not None:
            t = time.perf_counter()
            try:
                activate(candidate)
            except Exception as exc:
                failed_at = time.perf_counter()
                restore_error = ""
                try:
                    activate(current)
                except Exception as again:  # pragma: no cover - the previous model ran a moment ago
                    restore_error = f"; restoring the previous model failed too: {again}"
                timings["rollback"] = (time.perf_counter() - failed_at) * 1000.0
                what = getattr(exc, "what", str(exc))
                result = fail(
                    "health_check",
                    f"model {m.version} failed to load or run in the agent: {what}; "
                    f"rolled back to the previous model{restore_error}",
                    getattr(exc, "fix", "") or "check the model with edge-bench on a test device",
                    rolled_back=True,
                    verdict=verdict.describe(),
                )
                result.timings_ms["rollback"] = timings["rollback"]
                return result
            timings["activate"] = (time.perf_counter() - t) * 1000.0
        self._pause("activated")

        self.note_signed(m.created)
        self.journal_path.unlink()
        _fsync_dir(self.dir)
        self._prune(
            keep={
                candidate.path,
                candidate.labels_path,
                current.path if current else None,
                current.labels_path if current else None,
            }
        )
        timings["total"] = (time.perf_counter() - t0) * 1000.0
        return InstallResult(True, None, "", "", candidate, current, False, verdict.describe(), timings)

    def rollback(
        self,
        manifest: Manifest,
        *,
        current: InstalledModel | None,
        activate: Callable[[InstalledModel | None], None] | None = None,
    ) -> InstallResult:
        """Serve the previous model again (a signed ``activate`` naming it): the pointers swap, journaled
        like an install, so a crash halfway goes back to ``current``; on a failure to run it, ``current``
        is restored. Afterwards ``current`` is the previous model: activating it again rolls forward."""
        if not self._lock.acquire(blocking=False):
            raise UpdateRefusedError(
                "busy", "another model update is being installed", "wait for its result, then send again"
            )
        try:
            self.check_replay(manifest)
            target = self.previous()
            if target is None or target.sha256 != manifest.sha256:
                raise UpdateRefusedError(
                    "no_candidate",
                    f"no previous model with sha256 {manifest.sha256[:12]}... to roll back to",
                    "name the candidate shadowing or the previous model (see the status' ota.previous)",
                )
            t0 = time.perf_counter()
            active = self.active()
            journal = {
                "phase": "switched",
                "candidate": target.describe(),
                "started": utc_iso(),
                "previous_active": active.describe() if active else None,
                "previous_previous": target.describe(),
            }
            atomic_write(self.journal_path, json.dumps(journal).encode())
            self._write_pointer("previous.json", current)
            self._write_pointer("active.json", target)
            if activate is not None:
                try:
                    activate(target)
                except Exception as exc:
                    self.recover()  # the journal puts the pointers back
                    what = getattr(exc, "what", str(exc))
                    return InstallResult(
                        False,
                        "health_check",
                        f"the previous model {target.version!r} failed to load or run: {what}; "
                        "still serving the current model",
                        getattr(exc, "fix", "") or "push a model again",
                        current,
                        current,
                        timings_ms={"total": (time.perf_counter() - t0) * 1000.0},
                    )
            self.note_signed(manifest.created)
            self.journal_path.unlink()
            _fsync_dir(self.dir)
            timings = {"total": (time.perf_counter() - t0) * 1000.0}
            return InstallResult(True, None, "", "", target, current, True, None, timings)
        finally:
            self._lock.release()

    def _prune(self, keep: set[str | None]) -> None:
        for p in self.dir.iterdir():
            if p.suffix in (".tflite", ".txt") and str(p) not in keep:
                p.unlink()


__all__ = [
    "PAUSE_ENV",
    "PHASES",
    "REFUSAL_REASONS",
    "InstallResult",
    "InstalledModel",
    "ModelStore",
    "atomic_write",
]
