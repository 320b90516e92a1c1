"""Stand-ins for modules a dependency imports at load time but a process may never use.

``defer(name)`` puts a module object in ``sys.modules`` that imports the real module the first time
one of its attributes is read, so code that does use it runs unchanged, only later. The agent uses
it for two modules paho-mqtt imports and a plain-TCP agent never needs (edge.agent.footprint).

``placeholders`` names exception classes that code reads without using the module otherwise, as
paho does on every plain socket read that would block (``except ssl.SSLWantReadError``): the stand-in
answers with a private class nothing raises, which is exactly as true as the real one while the real
module is not loaded (no SSL socket can exist before it is). Loading it swaps the real classes in.
``from name import X`` binds whatever the stand-in holds at that moment: defer only in processes
whose imports you know (an entry point), never in a library.

``importlib.util.LazyLoader`` would be the standard tool, but on Python 3.11 the next ``import`` of a
lazy module reads its ``__spec__`` and loads it on the spot, which is exactly what paho does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

_lock = threading.RLock()


class DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is read."""

    def __init__(self, name: str, spec: Any, placeholders: Iterable[str] = ()) -> None:
        super().__init__(name)
        self.__spec__ = spec  # read by the import system on every `import name`: must not load
        self.__deferred_real__: types.ModuleType | None = None
        self.__deferred_placeholders__ = tuple(placeholders)
        for attr in self.__deferred_placeholders__:
            setattr(self, attr, type(attr, (Exception,), {"__module__": __name__, "__doc__": "never raised"}))

    def __getattr__(self, attr: str) -> Any:  # only called for attributes the stand-in lacks
        if attr == "__path__":
            raise AttributeError(attr)  # "is it a package?" (the import system asks): no, and no load
        real = self.__deferred_real__
        return getattr(real if real is not None else self.load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self.load())

    def load(self) -> types.ModuleType:
        """Import the real module (once) and swap the real classes in for the placeholders."""
        with _lock:
            real = self.__deferred_real__
            if real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                real = importlib.import_module(self.__name__)  # also rebinds the parent's attribute
                for attr in self.__deferred_placeholders__:
                    setattr(self, attr, getattr(real, attr))
                self.__deferred_real__ = real
            return real


def defer(name: str, *, placeholders: Iterable[str] = ()) -> bool:
    """Install a stand-in for ``name`` if it is not imported yet; True if one was installed."""
    with _lock:
        if name in sys.modules:
            return False
        spec = importlib.util.find_spec(name)  # imports the parent package (e.g. urllib), not name
        if spec is None:
            return False  # not on this Python: the importer's own ImportError handling applies
        stand_in = DeferredModule(name, spec, placeholders)
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, stand_in)
        return True


def is_loaded(name: str) -> bool:
    """True once the real module is imported (a stand-in never used counts as not loaded)."""
    mod = sys.modules.get(name)
    if isinstance(mod, DeferredModule):
        return mod.__deferred_real__ is not None
    return mod is not None
