"""The model the agent serves, and the one way to change it: load -> test inference -> swap.

Three callers change the model and all go through :class:`ModelSlot`:

* start-up (:meth:`ModelSlot.start`): the installed update if any, else the configured model; an
  installed update that no longer loads (a new runtime, a disk error) falls back to the previous
  update, else to the configured model, instead of bricking the device;
* the ``reload`` command (:meth:`ModelSlot.reload`): the same model again, from disk;
* an over-the-air update (:meth:`ModelSlot.activate`, called by the model store's install between
  its journal phases): the new model, or back to the one it replaced.

A new model is loaded and runs one inference on a random input *beside* the one serving; only
then is it swapped in (under the serving interpreter's lock, so an invoke in progress ends
first). The replaced pipeline is kept, one deep, for :meth:`ModelSlot.rollback` and for an
update that is rolled back right after its activation. A failure anywhere leaves the serving
model untouched. The main and finisher threads read :attr:`ModelSlot.pipeline` and nothing else.

Shadow mode (edge.agent.shadow) adds a *candidate* beside the serving pipeline
(:meth:`ModelSlot.load_candidate`): loaded and tested the same way, with one interpreter thread (it
runs on the shadow runner's low-priority thread, on whatever CPU the serving model leaves), never
served. Promoting it is an ordinary install of its file (edge.ota.handler), not a swap of this object.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import EdgeError
from edge.inference.pipeline import Pipeline, Settings
from edge.inference.preprocess import Normalization, random_input
from edge.model import metadata as model_metadata
from edge.model.labels import read_labels
from edge.model.runtime import LoadedModel, default_threads, load_model
from edge.ota.install import InstalledModel, ModelStore

if TYPE_CHECKING:
    from edge.agent.config import ModelConfig, PreprocessConfig

log = logging.getLogger("edge.agent.slot")


def _same(a: InstalledModel | None, b: InstalledModel | None) -> bool:
    if a is None or b is None:
        return a is b
    return Path(a.path) == Path(b.path) and a.sha256 == b.sha256


class ModelSlot:
    """Owns the serving :class:`Pipeline`, the installed-update pointer it came from and the settings.

    ``model`` and ``preprocess`` are the ``[model]`` and ``[preprocess]`` config sections;
    ``store`` is the journaled model store (its crash recovery runs here, before anything loads);
    ``on_swap`` callbacks run after every change of model (the app publishes its status).
    """

    def __init__(
        self,
        model: ModelConfig,
        preprocess: PreprocessConfig,
        settings: Settings,
        store: ModelStore,
        *,
        delegates: Any = None,
        on_swap: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.model_cfg = model
        self.preprocess_cfg = preprocess
        self.settings = settings
        self.store = store
        self.delegates = delegates  # the delegate seam of edge.model.runtime.load_model (tests)
        self.on_swap = list(on_swap)
        self.notes: list[str] = store.recover()  # an interrupted update is undone before anything loads
        store.discard_candidates()  # shadow mode is not kept across a restart (docs/mqtt.md)
        for note in self.notes:
            log.warning("%s", note)
        self.installed: InstalledModel | None = store.active()  # None: the configured model
        self.previous: tuple[Pipeline, InstalledModel | None] | None = None
        self.pipeline: Pipeline  # set by start(); a plain attribute: the main thread reads it per input
        self.candidate: tuple[Pipeline, InstalledModel] | None = None  # shadow mode's, never served
        # One change at a time: the command worker (reload) and the OTA thread (activate) may race.
        self._change = threading.RLock()

    @property
    def configured_path(self) -> Path | None:
        p = self.model_cfg.path
        return Path(p) if p is not None else None

    def paths(self, installed: InstalledModel | None) -> tuple[Path | None, Path | None]:
        """(model, labels) for ``installed`` (None: the configured model)."""
        m = self.model_cfg
        if installed is not None:
            labels = Path(installed.labels_path) if installed.labels_path else m.labels
            return Path(installed.path), labels
        return self.configured_path, m.labels

    # --- start-up ------------------------------------------------------------------------------------
    def start(self) -> Pipeline:
        """Load the model to serve; an installed update that fails to load falls back (see module doc)."""
        with self._change:
            while True:
                try:
                    self.pipeline = self._load(self.installed, test=False)
                    return self.pipeline
                except EdgeError as exc:
                    if not self._fall_back(exc):
                        raise

    def _fall_back(self, error: Exception) -> bool:
        """False when there is nothing to fall back to (the configured model itself failed)."""
        bad = self.installed
        if bad is None:
            return False
        prev = self.store.previous()
        configured = self.configured_path
        target = prev if prev is not None and prev.path != bad.path and self.store._valid(prev) else None
        if target is not None and configured is not None and Path(target.path) == configured:
            target = None
        self.store.set_active(target)
        self.installed = target
        note = (
            f"installed model {bad.version!r} does not load ({getattr(error, 'what', error)}); went back to "
            + (f"version {target.version!r}" if target else "the configured model")
        )
        self.notes.append(note)
        log.warning("%s", note)
        return True

    # --- changes while serving -------------------------------------------------------------------------
    def reload(self) -> LoadedModel:
        """Load the serving model again from disk and swap; on failure the old one keeps serving."""
        with self._change:
            pipe = self._load(self.installed, test=True)
            self._swap(pipe, self.installed)
            return pipe.model

    def activate(self, model: InstalledModel | None) -> None:
        """Serve ``model`` (None, or the configured file: the configured model); raises if it fails to
        load or run, and then the serving model is untouched. The model store's install hook."""
        configured = self.configured_path
        target = None if model is None or (configured and Path(model.path) == configured) else model
        with self._change:
            if _same(target, self.installed):
                return  # already serving it (e.g. the store restoring what a failed candidate never replaced)
            if self.previous is not None and _same(target, self.previous[1]):
                self.rollback()
                return
            pipe = self._load(target, test=True)
            self._swap(pipe, target)
        log.info("now serving %s (version %s)", pipe.model.path, target.version if target else "configured")

    def load_candidate(self, model: InstalledModel) -> Pipeline:
        """Load ``model`` as the shadow candidate (load -> test inference), replacing any earlier one; raises
        if it fails to load or run, and then nothing changes (the serving model is never touched)."""
        with self._change:
            pipe = self._load(model, test=True, threads=1)
            pipe.settings = self.settings
            self.candidate = (pipe, model)
        log.info("shadow candidate %s (version %s) loaded", model.sha256[:12], model.version)
        return pipe

    def drop_candidate(self) -> None:
        with self._change:
            self.candidate = None

    def rollback(self) -> None:
        """Swap the replaced pipeline back in (kept in memory: no load, no test needed)."""
        with self._change:
            if self.previous is None:
                raise EdgeError("no previous model to roll back to", "reload or install a model instead")
            pipe, installed = self.previous
            self._swap(pipe, installed)
        log.info("rolled back to %s", pipe.model.path)

    def update_settings(self, **values: Any) -> Settings:
        """New settings, swapped in as one object: the finisher never mixes two commands' values."""
        with self._change:
            self.settings = dataclasses.replace(self.settings, **values)
            pipe = self.pipeline
            with pipe.lock:
                pipe.settings = self.settings
            if self.candidate is not None:  # compared under the same settings
                self.candidate[0].settings = self.settings
        log.info("settings changed: %s", values)
        return self.settings

    def settings_view(self) -> dict[str, Any]:
        """The settings a ``set`` command may change, as the status and the command's result show them."""
        s = self.settings
        return {"top_k": s.top_k, "threshold": s.threshold, "iou": s.iou, "max_detections": s.max_detections}

    # --- internals ---------------------------------------------------------------------------------------
    def _load(self, installed: InstalledModel | None, *, test: bool, threads: int | None = None) -> Pipeline:
        path, labels_path = self.paths(installed)
        if path is None:
            raise EdgeError(
                "no model given", "pass --model path/to/model.tflite (or [model] path in the config)"
            )
        m, p = self.model_cfg, self.preprocess_cfg
        model = load_model(
            path,
            runtime=m.runtime,
            threads=threads or m.threads or default_threads(),  # all usable cores (see default_threads)
            delegate=m.delegate,
            delegates=self.delegates,
            max_bytes=m.max_bytes,
        )
        # Labels and normalization edge-convert embedded in the model fill what no flag or config gave.
        meta = model_metadata.resolve(model.path, labels=read_labels(labels_path), mean=p.mean, std=p.std)
        pipe = Pipeline(
            model,
            meta.labels,
            Normalization(meta.mean, meta.std, p.resample),
            self.settings,
            p.max_image_pixels,
            task=m.task,
            resize=p.resize,
        )
        if pipe.kind == "classifier":  # labels naming fewer classes than the model outputs are refused
            checked = model_metadata.resolve(
                model.path,
                labels=meta.labels if meta.labels_from == "flag" else None,
                mean=meta.mean,
                std=meta.std,
                classes=model_metadata.classifier_classes([o.shape for o in model.outputs]),
            )
            for warning in checked.warnings:
                log.warning("%s", warning)
        if test:  # a model that loads but cannot run must not replace one that runs
            spec = model.inputs[0]
            model.interpreter.set_tensor(spec.index, random_input(spec, np.random.default_rng(0)))
            model.interpreter.invoke()
        for note in model.notes:
            log.warning("%s", note)
        log.info("task %s (%s), resize %s", pipe.kind, pipe.choice.reason, pipe.resize)
        log.info(
            "model %s (sha256 %s..., %s) on %s %s, delegate %s, %d bytes, init %.1f ms",
            model.path,
            model.sha256[:12],
            pipe.kind,
            model.runtime.name,
            model.runtime.version,
            model.delegate,
            model.size_bytes,
            model.init_ms,
        )
        return pipe

    def _swap(self, pipe: Pipeline, installed: InstalledModel | None) -> None:
        old = self.pipeline
        pipe.settings = self.settings
        with old.lock:  # an invoke in progress on the old interpreter ends first
            self.previous = (old, self.installed)
            self.pipeline = pipe
            self.installed = installed
        for callback in self.on_swap:
            try:
                callback()
            except Exception:
                log.exception("model-change callback %r failed", callback)
