"""Shared fine-tuning loop for pruning and QAT."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from converter import _tf
from converter.data import Dataset
from converter.errors import ConvertError
from converter.progress import keras_callback


def require_labels(data: Dataset | None, step: str) -> Dataset:
    if data is None or data.y is None:
        raise ConvertError(
            f"{step} fine-tunes the model, which needs labelled data; "
            + ("no --data was given" if data is None else f"{data.source} has no labels (y)"),
            "pass --data as an .npz with x and y, or an image folder with one sub-folder per class",
        )
    return data


def loss_for(model: Any, y: np.ndarray) -> Any:
    """Sparse cross-entropy, from logits unless the model ends in a softmax."""
    keras = _tf.keras()
    out = model.outputs[0]
    probs = False
    try:
        last = model.layers[-1]
        last = getattr(last, "layer", last)  # pruning/QAT wrappers
        act = getattr(last, "activation", None)
        act = getattr(act, "activation", act)  # QAT's QuantizeAwareActivation wraps the function
        probs = getattr(act, "__name__", "") == "softmax" or type(last).__name__ == "Softmax"
    except (IndexError, AttributeError):
        pass
    if out.shape[-1] is not None and int(y.max()) >= int(out.shape[-1]):
        raise ConvertError(
            f"labels go up to {int(y.max())} but the model has {int(out.shape[-1])} outputs",
            "check that y holds class indices 0..K-1 for this model",
        )
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)


def fit(
    model: Any,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    label: str,
    progress: bool,
    callbacks: list[Any] | None = None,
) -> None:
    keras = _tf.keras()
    assert data.y is not None  # require_labels() ran before
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=loss_for(model, data.y), metrics=["accuracy"]
    )
    steps = math.ceil(len(data) / batch_size)
    model.fit(
        data.x,
        data.y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        shuffle=True,
        callbacks=[*(callbacks or []), keras_callback(label, epochs, steps, progress)],
    )


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    return math.ceil(len(data) / batch_size)
