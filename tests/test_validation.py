"""edge.validation: the Record base every config section, manifest and command parameter set uses."""

# msgspec evaluates annotations at run time: Optional keeps the records importable on Python 3.9.
# ruff: noqa: UP045
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import msgspec
import pytest
from msgspec import Meta

from edge.validation import DecodeError, Record, Secret, decode, problems, to_builtins


class Inner(Record, frozen=True):
    weights: list[float] = []
    path: Optional[Path] = None


class Outer(Record, frozen=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1)]
    low: float = 0.0
    high: float = 1.0
    password: Optional[Secret] = None
    inner: Inner = msgspec.field(default_factory=Inner)

    def cross_check(self) -> list[tuple[str, object, str]]:
        return [("low", self.low, f"must not exceed high ({self.high!r})")] if self.low > self.high else []


def test_every_problem_is_listed_with_its_key_path() -> None:
    found = problems(
        Outer, {"nmae": "x", "low": "abc", "inner": {"weights": [1.0, float("inf")], "pth": "/x"}}
    )
    assert found == [
        ("nmae", "x", "unknown key (did you mean 'name'? valid keys: name, low, high, password, inner)"),
        ("name", "<missing>", "required key is missing"),
        ("low", "abc", "Expected `float`, got `str`"),
        ("inner.pth", "/x", "unknown key (did you mean 'path'? valid keys: weights, path)"),
        ("inner.weights", [1.0, float("inf")], "must be a finite number (not nan or inf)"),
    ]


def test_cross_checks_run_once_the_values_are_fine() -> None:
    assert problems(Outer, {"name": "n", "low": 2, "high": 1}) == [("low", 2.0, "must not exceed high (1.0)")]
    with pytest.raises(DecodeError) as err:
        decode(Outer, {"name": "n", "low": 2, "high": 1})
    assert err.value.problems == [("low", 2.0, "must not exceed high (1.0)")]


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError, match="name: Expected `str` of length >= 1"):
        Outer(name="")
    with pytest.raises(ValueError, match="low: must not exceed high"):
        Outer(name="n", low=3.0)
    with pytest.raises(ValueError, match="weights: must be a finite number"):
        Inner(weights=[float("nan")])
    with pytest.raises(AttributeError):
        Outer(name="n").low = 5.0  # type: ignore[misc]


def test_paths_and_secrets_decode_from_text_and_secrets_never_print() -> None:
    rec = decode(Outer, {"name": "n", "password": "hunter2", "inner": {"path": "/tmp/x"}})
    assert rec.inner.path == Path("/tmp/x") and rec.password is not None
    assert rec.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(rec) and "hunter2" not in str(to_builtins(rec))
    assert to_builtins(rec)["inner"]["path"] == "/tmp/x"
    lax = decode(Outer, {"name": "n", "low": "0.5"}, strict=False)
    assert lax.low == 0.5
