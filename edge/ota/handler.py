"""The agent's side of ``model/set``: verify, install, answer. Independent of the MQTT client in use."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError
from edge.ota.install import InstalledModel, InstallResult, ModelStore
from edge.ota.manifest import UpdateRefusedError, header_id, verify_message

if TYPE_CHECKING:
    from edge.ota.config import OtaConfig

ACTION = "model/set"


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
    ) -> None:
        self.config = config
        self.store = store
        self.device = device
        self.current = current
        self.activate = activate
        self._keys: list[Any] | None = None
        self.last: InstallResult | None = None

    def public_keys(self) -> list[Any]:
        if self._keys is None:
            from edge.ota.keys import load_public_key

            self._keys = [load_public_key(k) for k in self.config.public_keys]
        return self._keys

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Never raises: every outcome is an answer (``ok``, ``reason``, ``error``, ``fix``)."""
        started = time.perf_counter()
        cmd_id = header_id(payload)
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
            result = self.store.install(update, current=self.current(), activate=self.activate)
        except UpdateRefusedError as exc:
            return self._answer(
                cmd_id,
                False,
                reason=exc.reason,
                error=exc.what,
                fix=exc.fix,
                elapsed_ms=(time.perf_counter() - started) * 1000.0,
            )
        except EdgeError as exc:  # e.g. a public key file that cannot be read
            return self._answer(
                cmd_id,
                False,
                reason="install_failed",
                error=exc.what,
                fix=exc.fix,
                elapsed_ms=(time.perf_counter() - started) * 1000.0,
            )
        self.last = result
        detail = result.describe()
        if result.ok:
            assert result.model is not None
            return self._answer(
                cmd_id,
                True,
                result={**detail, "model_path": result.model.path, "labels_path": result.model.labels_path},
                elapsed_ms=(time.perf_counter() - started) * 1000.0,
            )
        return self._answer(
            cmd_id,
            False,
            reason=result.reason,
            error=result.error,
            fix=result.fix,
            result=detail,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
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


def __getattr__(name: str) -> Any:
    # The pydantic models live in edge.ota.config: importing pydantic costs the agent's process ~6 MB of RSS
    # for good, and it only needs them to validate its config (in a forked child, edge.agent.config_view).
    if name in ("OtaConfig",):
        from edge.ota.config import OtaConfig

        return {"OtaConfig": OtaConfig}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
