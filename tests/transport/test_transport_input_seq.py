"""One input, one seq: a file handled again because its "done" record was lost keeps its first number."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.agent import AgentProcess, agent_command
from tests.support.broker import Mosquitto
from tests.support.mqtt import Capture


def test_lost_done_record_does_not_give_a_second_seq(
    mosquitto: Mosquitto, tmp_path: Path, coral: Path, capture: Callable[..., Capture], agents
) -> None:
    inbox, state = tmp_path / "in", tmp_path / "state"
    inbox.mkdir()
    for i in range(3):
        shutil.copy(coral / "cat.bmp", inbox / f"img_{i}.bmp")
    sub = capture("edge/q1/predictions")
    args = agent_command(
        mosquitto,
        "q1",
        state,
        "--model",
        str(coral / "mobilenet_v1_0.25_128_quant.tflite"),
        "--source",
        str(inbox),
        "--metrics-interval",
        "0",
        "--once",
    )
    first: AgentProcess = agents(args, tmp_path / "agent1.log")
    assert first.wait(60) == 0, first.output()[-3000:]
    sub.wait(lambda s: len(s.on("edge/q1/predictions")) == 3, 15, "3 predictions")
    # What a full disk (or a SIGKILL) between spooling a prediction and recording the file does.
    records = next(state.rglob("sources.db"))
    with sqlite3.connect(records) as db:
        assert db.execute("DELETE FROM processed").rowcount == 3
    second: AgentProcess = agents(args, tmp_path / "agent2.log")
    assert second.wait(60) == 0, second.output()[-3000:]
    time.sleep(1.0)  # anything published would have arrived by now
    preds = sub.json("edge/q1/predictions")
    assert sorted(p["seq"] for p in preds) == [1, 2, 3], preds
    assert sorted(p["source"] for p in preds) == ["img_0.bmp", "img_1.bmp", "img_2.bmp"]
    with sqlite3.connect(records) as db:  # recorded as done again: a third run would not look at them
        assert db.execute("SELECT COUNT(*) FROM processed").fetchone()[0] == 3
