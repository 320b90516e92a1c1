"""The directory source: odd names, symlinks out of the directory, and mtime-gated polling."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from edge.agent.sources import directory
from edge.agent.sources.base import escaped_name
from edge.agent.sources.directory import DirectorySource
from edge.errors import InputError
from tests.support.agent import run_agent
from tests.support.broker import Mosquitto

LATIN1 = b"caf\xe9 \\ 1.jpg"  # not UTF-8, and a backslash: the escaped form must stay reversible


def _unescape(text: str) -> bytes:
    """The inverse of escaped_name for a non-UTF-8 name (the test's proof that it loses nothing)."""
    out, i, raw = bytearray(), 0, text.encode("utf-8")
    while i < len(raw):
        if raw[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif raw[i : i + 2] == b"\\x":
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def test_escaped_name_is_lossless_and_json_safe() -> None:
    name = os.fsdecode(LATIN1)
    key = escaped_name(name)
    assert key == "caf\\xe9 \\\\ 1.jpg" and key.encode("utf-8")
    assert _unescape(key) == LATIN1
    assert escaped_name("zoë.jpg") == "zoë.jpg"  # UTF-8 names are left alone


def _consume(src: DirectorySource, stop: threading.Event, seen: list[str]) -> threading.Thread:
    def run() -> None:
        for item in src.items(stop, once=False):
            seen.append(item.name)
            src.done(item)

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(pred())


def test_symlink_out_of_the_directory_is_refused_without_reading_it(tmp_path: Path) -> None:
    d, outside = tmp_path / "in", tmp_path / "secret.txt"
    d.mkdir()
    outside.write_bytes(b"root:x:0:0:secret\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "elsewhere.png")
    (d / "leak.jpg").symlink_to(outside)
    (d / "link.png").symlink_to(tmp_path / "elsewhere.png")
    Image.new("RGB", (8, 8)).save(d / "real.png")
    (d / "inside.png").symlink_to(d / "real.png")  # a link within the directory is followed
    stop = threading.Event()
    src = DirectorySource(d, tmp_path / "state", settle_s=0.0)
    items = {i.name: i for i in src.items(stop, once=True)}
    assert set(items) == {"leak.jpg", "link.png", "real.png", "inside.png"}
    for name in ("leak.jpg", "link.png"):
        refusal = items[name].data
        assert (
            isinstance(refusal, InputError) and "symbolic link" in refusal.what and "outside" in refusal.what
        )
        assert "secret" not in refusal.what + refusal.fix and "root:x" not in refusal.what + refusal.fix
    assert items["inside.png"].data == items["real.png"].data == (d / "real.png").read_bytes()
    for item in items.values():
        src.done(item)
    src.close()
    src = DirectorySource(d, tmp_path / "state", settle_s=0.0)  # all recorded, refusals too
    assert list(src.items(stop, once=True)) == []
    src.close()


@pytest.mark.parametrize("watch", ["inotify", "mtime"])
def test_new_files_picked_up_without_idle_scans(tmp_path: Path, monkeypatch, watch: str) -> None:
    d = tmp_path / "in"
    d.mkdir()
    for i in range(50):
        (d / f"old{i}.jpg").write_bytes(b"x")
    scans: list[float] = []
    if watch == "mtime":  # what runs where inotify is missing
        monkeypatch.setattr(directory.DirectoryWatch, "open", classmethod(lambda cls, path: None))
    src = DirectorySource(d, tmp_path / "state", poll_interval_s=0.02, settle_s=0.05)
    assert (src._watch is not None) == (watch == "inotify")  # Linux: inotify is used
    real_scan = src._scan
    monkeypatch.setattr(src, "_scan", lambda settle: scans.append(time.monotonic()) or real_scan(settle))
    monkeypatch.setattr(directory, "RACY_S", 0.2)  # a short racy window so the test sees the idle state
    stop, seen = threading.Event(), []
    t = _consume(src, stop, seen)
    try:
        assert _wait(lambda: len(seen) == 50)
        time.sleep(0.5)  # idle: past the racy window, nothing new -> no scans
        before = len(scans)
        time.sleep(0.5)
        assert len(scans) == before, "an idle directory was scanned again"
        # a file written in place then renamed in (a camera), and one written slowly (settle)
        (d / "new.jpg.part").write_bytes(b"y")
        os.rename(d / "new.jpg.part", d / "new.jpg")
        with open(d / "slow.jpg", "wb") as fh:
            fh.write(b"z")
            fh.flush()
            assert _wait(lambda: "new.jpg" in seen)
            fh.write(b"zz")
        assert _wait(lambda: "slow.jpg" in seen)  # unsettled at first: scanned until it settled
        assert len(scans) > before
    finally:
        stop.set()
        t.join(5)
        src.close()
    assert sorted(seen[50:]) == ["new.jpg", "slow.jpg"] and len(seen) == 52


@pytest.mark.parametrize("watch", ["inotify", "mtime"])
def test_rewrite_in_place_is_found(tmp_path: Path, monkeypatch, watch: str) -> None:
    """inotify sees the close after writing at once; the mtime fallback at its periodic full scan."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"x")
    monkeypatch.setattr(directory, "RACY_S", 0.0)
    if watch == "mtime":
        monkeypatch.setattr(directory.DirectoryWatch, "open", classmethod(lambda cls, path: None))
        monkeypatch.setattr(directory, "FULL_RESCAN_S", 0.3)
    else:
        monkeypatch.setattr(directory, "FULL_RESCAN_S", 3600.0)
    src = DirectorySource(d, tmp_path / "state", poll_interval_s=0.02, settle_s=0.0)
    stop, seen = threading.Event(), []
    t = _consume(src, stop, seen)
    try:
        assert _wait(lambda: seen == ["a.jpg"])
        (d / "a.jpg").write_bytes(b"xyz")  # same name, new content: the directory's mtime does not move
        assert _wait(lambda: seen == ["a.jpg", "a.jpg"])
    finally:
        stop.set()
        t.join(5)
        src.close()


def test_agent_reports_odd_names_and_symlinks_on_errors_and_records_them(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture
) -> None:
    d = tmp_path / "in"
    d.mkdir()
    cat = (coral / "cat.bmp").read_bytes()
    with open(os.path.join(os.fsencode(d), LATIN1), "wb") as fh:  # a name in Latin-1, as old cameras write
        fh.write(cat)
    (tmp_path / "secret.txt").write_bytes(b"PRIVATE KEY 1234\n")
    (d / "leak.bmp").symlink_to(tmp_path / "secret.txt")
    (d / "ok.bmp").write_bytes(cat)
    sub = capture("edge/t1/predictions", "edge/t1/errors")
    args = ("--model", coral / "mobilenet_v1_0.25_128_quant.tflite", "--source", d, "--once")
    r = run_agent(mosquitto, "t1", tmp_path / "state", *args)
    assert r.returncode == 0, r.stderr
    sub.wait(lambda s: len(s.messages) >= 3, 10, "3 messages")
    errors = {e["source"]: e for e in sub.json("edge/t1/errors")}
    key = escaped_name(os.fsdecode(LATIN1))
    assert set(errors) == {key, "leak.bmp"}, errors
    assert _unescape(key) == LATIN1 and "UTF-8" in errors[key]["error"] and "rename" in errors[key]["fix"]
    assert "symbolic link" in errors["leak.bmp"]["error"]
    assert all("PRIVATE" not in m.payload.decode() for m in sub.messages)
    assert [p["source"] for p in sub.json("edge/t1/predictions")] == ["ok.bmp"]
    r = run_agent(
        mosquitto, "t1", tmp_path / "state", *args
    )  # recorded as done: a second run has nothing to do
    assert r.returncode == 0 and "stopped after 0 predictions" in r.stderr, r.stderr
    time.sleep(0.3)
    assert len(sub.json("edge/t1/errors")) == 2
