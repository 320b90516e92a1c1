"""The agent's validated configuration, kept without pydantic in the long-running process.

Validation is pydantic's (the models of :mod:`edge.agent.config`, same errors), but pydantic with
pydantic_core and the stdlib it drags in (importlib.metadata, email, zipfile, decimal, zoneinfo,
hashlib/OpenSSL through ``secrets``) holds ~11 MB of RSS for the agent's whole life, for a config
read once. So ``edge-agent run`` validates in a forked child that sends back the plain values
(``model_dump()``), and the agent keeps a read-only :class:`ConfigView` of them. The parent imports
numpy and the runtime meanwhile, so start-up is not slower. Where ``fork`` is missing, or the process
already runs threads (a fork would copy locks another thread holds), validation runs in-process.
"""

from __future__ import annotations

import importlib
import os
import pickle
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

ORIGIN = "__origin__"  # in a snapshot: (module, qualname) of the model a section came from


class ConfigView:
    """Attribute access to validated config values (``cfg.mqtt.broker``), read-only.

    Methods and properties defined on the config models (e.g. a section's ``allows(action)``) work
    too: they are looked up on the model class, whose module is imported on first use.
    """

    __slots__ = ("_values", "_origin")

    def __init__(self, tree: Mapping[str, Any]) -> None:
        values = {k: ConfigView(v) if isinstance(v, Mapping) else v for k, v in tree.items() if k != ORIGIN}
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_origin", tree.get(ORIGIN))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            pass
        attr = self._model_attribute(name)
        if attr is _MISSING:
            raise AttributeError(f"no config key {name!r}")
        return attr

    def _model_attribute(self, name: str) -> Any:
        if self._origin is None or name.startswith("__"):
            return _MISSING
        module, qualname = self._origin
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        for klass in cls.__mro__:  # the model's own classes, not pydantic's BaseModel machinery
            if klass is object or klass.__module__.split(".")[0] == "pydantic":
                break
            if name in vars(klass):
                attr = vars(klass)[name]
                return attr.__get__(self, cls) if hasattr(attr, "__get__") else attr
        return _MISSING

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the agent's configuration is read-only once validated")

    def __repr__(self) -> str:
        return f"ConfigView({self.model_dump()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigView) and other._values == self._values

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:  # copy, deepcopy and pickle (__setattr__ refuses slot state)
        return (ConfigView, (self._tree(),))

    def _tree(self) -> dict[str, Any]:
        tree = {k: v._tree() if isinstance(v, ConfigView) else v for k, v in self._values.items()}
        if self._origin is not None:
            tree[ORIGIN] = self._origin
        return tree

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """The values as nested dicts; ``mode="json"`` as pydantic's: paths as str, secrets masked."""
        return {k: _dump(v, mode) for k, v in self._values.items()}

    def resolved_state_dir(self) -> Path:  # here, not looked up: that would import edge.agent.config
        return Path(self._values["state_dir"]).expanduser()


_MISSING = object()


class Secret:
    """A secret config value (pydantic's SecretStr, without pydantic): ``**********`` in reprs and logs."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def get_secret_value(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


def plain(value: Any) -> Any:
    """``model_dump()`` output with pydantic's secret types replaced: unpickling them would import pydantic."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "get_secret_value"):
        return Secret(value.get_secret_value())
    return value


def _dump(value: Any, mode: str) -> Any:
    if isinstance(value, ConfigView):
        return value.model_dump(mode=mode)
    if mode == "json":
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, Secret):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [_dump(v, mode) for v in value]
    return value


class ConfigValidationFailed(EdgeError):
    """An EdgeError raised in the validating child, re-raised here with its exit code."""

    def __init__(self, what: str, fix: str, exit_code: int) -> None:
        super().__init__(what, fix)
        self.exit_code = exit_code


def snapshot(model: Any) -> dict[str, Any]:
    """A pydantic model's values (``model_dump()``, secrets as :class:`Secret`) and where each section came from."""
    tree: dict[str, Any] = plain(model.model_dump())
    _add_origins(model, tree)
    return tree


def _add_origins(model: Any, tree: dict[str, Any]) -> None:
    cls = type(model)
    tree[ORIGIN] = (cls.__module__, cls.__qualname__)
    for name in cls.model_fields:
        sub = getattr(model, name, None)
        if hasattr(type(sub), "model_fields") and isinstance(tree.get(name), dict):
            _add_origins(sub, tree[name])


def _validate(path: str | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    from edge.agent.config import load_config

    return snapshot(load_config(path, flags=flags))


class ForkedValidation:
    """``start()`` forks the validating child; ``result()`` waits for it and returns the view."""

    def __init__(self, path: str | None, flags: Mapping[str, Any]) -> None:
        self.path, self.flags = path, dict(flags)
        self._pid: int | None = None
        self._fd: int | None = None

    def start(self) -> ForkedValidation:
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return self
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; coverage does not follow forks
            os.close(r)
            code = 0
            try:
                try:
                    msg: tuple[Any, ...] = ("ok", _validate(self.path, self.flags))
                except EdgeError as exc:
                    msg = ("error", exc.what, exc.fix, exc.exit_code)
                with os.fdopen(w, "wb") as fh:
                    fh.write(pickle.dumps(msg))
            except BaseException:  # a bug: show it; the parent reports a child that sent nothing
                import traceback

                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)  # no atexit, no flushing of the parent's buffers
        os.close(w)
        self._pid, self._fd = pid, r
        return self

    def result(self) -> ConfigView:
        if self._pid is None:
            return ConfigView(_validate(self.path, self.flags))
        assert self._fd is not None
        with os.fdopen(self._fd, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(self._pid, 0)
        if not data:
            raise EdgeError(
                f"the config validation process failed (wait status {status})",
                "run `edge-agent check-config FILE` to see the problem",
            )
        msg = pickle.loads(data)  # our own child's bytes
        if msg[0] == "error":
            raise ConfigValidationFailed(msg[1], msg[2], msg[3])
        return ConfigView(msg[1])


def load_config_view(path: str | None, flags: Mapping[str, Any]) -> ConfigView:
    """Validate defaults < file < EDGE_* < flags and return the values, keeping pydantic out of this process."""
    return ForkedValidation(path, flags).start().result()
