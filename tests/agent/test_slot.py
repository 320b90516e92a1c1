"""ModelSlot on real models: a failed change leaves the serving model untouched; rollback needs no load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.agent.config import load_config
from edge.agent.slot import ModelSlot
from edge.errors import EdgeError
from edge.inference.pipeline import Settings
from edge.ota.handler import current_from_path
from edge.ota.install import InstalledModel, ModelStore, sha256_file


@pytest.fixture
def slot(coral: Path, tmp_path: Path) -> tuple[ModelSlot, list[str]]:
    cfg = load_config(None, flags={"model": {"path": str(coral / "keras_lstm_mnist_ptq.tflite")}}, environ={})
    swaps: list[str] = []
    s = ModelSlot(
        cfg.model,
        cfg.preprocess,
        Settings(),
        ModelStore(tmp_path / "state"),
        on_swap=[lambda: swaps.append(str(s.pipeline.model.path))],
    )
    s.start()
    return s, swaps


def _installed(
    store: ModelStore, coral: Path, name: str, version: str, labels: str | None = None
) -> InstalledModel:
    path = store.dir / f"v{version}.tflite"
    shutil.copy(coral / name, path)
    return InstalledModel(str(path), sha256_file(path), version, labels_path=labels)


def test_a_change_that_fails_leaves_the_serving_model_and_pointer_untouched(
    slot: tuple[ModelSlot, list[str]], coral: Path, tmp_path: Path
) -> None:
    s, swaps = slot
    serving = s.pipeline
    no_labels = _installed(
        s.store, coral, "mobilenet_v1_0.25_128_quant.tflite", "2", str(tmp_path / "gone.txt")
    )
    with pytest.raises(EdgeError, match="labels file not found"):
        s.activate(no_labels)
    broken = _installed(s.store, coral, "model_invoking_error.tflite", "3")
    with pytest.raises(EdgeError):
        s.activate(broken)
    assert s.pipeline is serving and s.installed is None and s.previous is None and swaps == []


def test_activate_swaps_keeps_the_previous_and_goes_back_without_loading(
    slot: tuple[ModelSlot, list[str]], coral: Path
) -> None:
    s, swaps = slot
    configured = s.pipeline
    s.activate(current_from_path(coral / "keras_lstm_mnist_ptq.tflite"))  # already serving it: nothing to do
    assert s.pipeline is configured and swaps == []
    update = _installed(s.store, coral, "mobilenet_v1_0.25_128_quant.tflite", "2")
    s.activate(update)
    assert s.installed == update and s.pipeline.model.sha256 == update.sha256
    assert s.previous is not None and s.previous[0] is configured
    s.activate(None)  # back to the configured model: the kept pipeline, not a new load
    assert s.pipeline is configured and s.installed is None
    s.rollback()  # and forth again
    assert s.installed == update and s.pipeline.model.sha256 == update.sha256
    assert len(swaps) == 3


def test_settings_follow_the_swaps(slot: tuple[ModelSlot, list[str]]) -> None:
    s, _ = slot
    with pytest.raises(EdgeError, match="no previous model"):
        s.rollback()
    s.update_settings(top_k=2)
    before = s.pipeline
    s.reload()
    assert s.pipeline is not before and s.pipeline.settings.top_k == 2
    s.update_settings(top_k=4)
    s.rollback()  # the kept pipeline gets the current settings, not those it had
    assert s.pipeline is before and s.pipeline.settings.top_k == 4
