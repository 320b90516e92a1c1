"""--publish-thumbnail end to end: the real agent (MoveNet on squat.bmp, and a noisy photo against the byte
cap) through a real mosquitto, edge-watch --web pairing each thumbnail with its prediction, and the
dashboard drawing them in a real headless Chromium; plus the pieces on their own."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge.agent.thumbnail import Thumbnails, encode
from edge.contract import schemas, thumbnail
from edge.watch import state as watch_state
from edge.watch.state import Fleet, Malformed, Thumbnail
from tests.support import DATA, samples
from tests.support.agent import AgentProcess, agent_command
from tests.support.broker import Mosquitto, free_port, wait_port
from tests.support.mqtt import publish
from tests.support.process import subprocess_env
from tests.watch.test_dashboard import Dom, chromium

TS = "2026-12-05T01:00:00.000Z"
# The dashboard's skeleton (dashboard.html COCO_EDGES), and the score under which it leaves a keypoint out
COCO_EDGES = [
    ("nose", "left_eye"),
    ("nose", "right_eye"),
    ("left_eye", "left_ear"),
    ("right_eye", "right_ear"),
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"),
    ("left_hip", "right_hip"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
]
KEYPOINT_MIN_SCORE = 0.2


def expected_shapes(pred: dict[str, Any], w: int, h: int) -> dict[str, Any]:
    """What the dashboard must draw, computed independently: normalized image coordinates x thumbnail size."""
    boxes = [
        [d["box"][1] * w, d["box"][0] * h, (d["box"][3] - d["box"][1]) * w, (d["box"][2] - d["box"][0]) * h]
        for d in pred.get("detections", [])
    ]
    kept = {k["name"]: (k["x"] * w, k["y"] * h) for k in pred.get("keypoints", []) if k["score"] >= 0.2}
    lines = [[*kept[a], *kept[b]] for a, b in COCO_EDGES if a in kept and b in kept]
    return {"boxes": boxes, "points": kept, "lines": lines}


def assert_drawn(shapes: dict[str, Any], pred: dict[str, Any], w: int, h: int) -> None:
    want = expected_shapes(pred, w, h)
    got_boxes = [b["xywh"] for b in shapes["boxes"]]
    assert len(got_boxes) == len(want["boxes"])
    for got, exp in zip(got_boxes, want["boxes"]):
        assert np.allclose(got, exp, atol=0.051), (got, exp)  # the page rounds to 0.1 px
    assert {p["name"] for p in shapes["points"]} == set(want["points"])
    for p in shapes["points"]:
        assert np.allclose(p["xy"], want["points"][p["name"]], atol=0.051)
    assert np.allclose(shapes["lines"], want["lines"], atol=0.051) if want["lines"] else not shapes["lines"]


def get_json(url: str) -> Any:
    return json.load(urllib.request.urlopen(url, timeout=5))


def wait_frame(url: str, device: str, seq: int, timeout: float = 30) -> dict[str, Any]:
    """edge-watch's frame of ``device`` once it shows thumbnail ``seq`` paired with its prediction."""
    deadline = time.monotonic() + timeout
    frame: Any = None
    while time.monotonic() < deadline:
        try:
            frame = get_json(f"{url}api/frame/{device}")
            if frame["seq"] == seq and frame["prediction"] is not None:
                return frame  # type: ignore[no-any-return]
        except urllib.error.HTTPError as err:
            assert err.code == 404
        time.sleep(0.1)
    raise AssertionError(f"edge-watch never paired thumbnail {seq} of {device}: {frame}")


def start_dashboard(spawn: Any, broker: Mosquitto, *extra: str) -> str:
    port = free_port()
    spawn(
        "--broker", broker.url, "--web", f"127.0.0.1:{port}", "--sse-seconds", "2", "--timeout", "180", *extra
    )
    assert wait_port("127.0.0.1", port, timeout=30)
    return f"http://127.0.0.1:{port}/"


def test_real_agent_thumbnails_pair_with_predictions_and_the_dashboard_draws_them(
    mosquitto: Mosquitto, capture: Any, spawn: Any, tmp_path: Path
) -> None:
    # Noise (a PNG at the thumbnail size: nothing smooths it): it cannot fit 6 KiB at 200 px, so the
    # cap has to act (squat.bmp's fits easily)
    rng = np.random.default_rng(0)
    noise = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(noise, "PNG")
    squat = (DATA / "squat.bmp").read_bytes()
    cap = 6 * 1024

    url = start_dashboard(spawn, mosquitto)
    sub = capture("edge/thumb/#")
    agent = AgentProcess(
        agent_command(
            mosquitto,
            "thumb",
            tmp_path / "state",
            "--model",
            str(DATA / "movenet_single_pose_lightning_ptq.tflite"),
            "--source",
            "mqtt",
            "--publish-thumbnail",
            "--thumbnail-size",
            "200",
            "--thumbnail-rate",
            "50",
            "--threads",
            "1",
        ),
        tmp_path / "agent.log",
        env={**subprocess_env(), "EDGE_POSTPROCESS_THUMBNAIL_MAX_BYTES": str(cap)},
    )
    try:
        sub.wait(lambda s: s.json("edge/thumb/status"), 60, "the agent's status")
        time.sleep(0.5)  # its subscription to infer is made on connect, just before the status
        sub.publish("edge/thumb/infer/squat", squat)
        sub.wait(lambda s: s.on("edge/thumb/thumbnail"), 60, "the first thumbnail")
        time.sleep(0.2)  # past the rate limit (50 a second)
        sub.publish("edge/thumb/infer/noise", noise.getvalue())
        thumbs = sub.wait(
            lambda s: len(s.on("edge/thumb/thumbnail")) >= 2 and s.on("edge/thumb/thumbnail"), 60
        )
        preds = {
            p["seq"]: p
            for p in sub.wait(
                lambda s: len(s.json("edge/thumb/predictions")) >= 2 and s.json("edge/thumb/predictions"), 30
            )
        }
    finally:
        agent.terminate()
    assert all(schemas.problems("predictions", p) == [] for p in preds.values())

    by_source = {}
    for msg in thumbs:
        payload = bytes(msg.payload)
        assert msg.qos == 0 and not msg.retain and len(payload) <= cap
        tag = thumbnail.read_tag(payload)
        assert tag is not None and tag.seq in preds and preds[tag.seq]["ts"] == tag.ts  # paired by seq and ts
        img = Image.open(io.BytesIO(payload))
        img.load()
        assert img.format == "JPEG" and max(img.size) <= 200
        by_source[preds[tag.seq]["source"]] = (img, payload, preds[tag.seq])

    # squat.bmp (500x610): the original picture, aspect kept, not the model's 192x192 input
    img, squat_jpeg, pose = by_source["squat"]
    assert img.size == (164, 200) and pose["kind"] == "pose"
    reference = np.asarray(Image.open(DATA / "squat.bmp").convert("RGB").resize(img.size), dtype=np.float32)
    assert np.abs(np.asarray(img.convert("RGB"), dtype=np.float32) - reference).mean() < 12
    # the noise (200x150): over the cap at 200 px even at quality 30, so half the size
    noisy, noisy_jpeg, _ = by_source["noise"]
    assert noisy.size == (100, 75) and len(noisy_jpeg) <= cap

    # edge-watch pairs the last thumbnail with its prediction, and serves both at /api/frame/<device>
    last = thumbnail.read_tag(bytes(thumbs[-1].payload))
    assert last is not None
    frame = wait_frame(url, "thumb", last.seq)
    assert base64.b64decode(frame["image"].split(",", 1)[1]) == bytes(thumbs[-1].payload)
    state = get_json(url + "api/state")
    (dev,) = state["devices"]
    assert dev["thumbnail"]["seq"] == last.seq and dev["thumbnail"]["paired"] is True

    # the squat frame on its own: published again (as the agent made it) so the page draws the real pose
    publish(mosquitto, [("edge/thumb/thumbnail", squat_jpeg)])
    frame = wait_frame(url, "thumb", pose["seq"])
    assert [(k["name"], k["x"], k["y"]) for k in frame["prediction"]["keypoints"]] == [
        (k["name"], k["x"], k["y"]) for k in pose["keypoints"]
    ]
    r = chromium(url, tmp_path, "--virtual-time-budget=3000", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    dom = Dom(r.stdout)
    (canvas,) = [e for e in dom.find("canvas") if e["attrs"].get("data-seq") == str(pose["seq"])]
    shapes = json.loads(canvas["attrs"]["data-shapes"])
    assert_drawn(shapes, pose, 164, 200)
    assert len(shapes["points"]) >= 10 and len(shapes["lines"]) >= 8  # a person squatting, mostly visible
    assert "hidden" not in dom.find("section", id="frames")[0]["attrs"]


def test_dashboard_draws_detections_and_hides_frames_without_thumbnails(
    mosquitto: Mosquitto, spawn: Any, tmp_path: Path
) -> None:
    url = start_dashboard(spawn, mosquitto)
    publish(mosquitto, [("edge/plain/predictions", samples.prediction(device="plain", seq=1))])
    for _ in range(100):
        if get_json(url + "api/state")["devices"]:
            break
        time.sleep(0.1)
    r = chromium(url, tmp_path, "--virtual-time-budget=1500", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    dom = Dom(r.stdout)
    assert "hidden" in dom.find("section", id="frames")[0]["attrs"]  # no thumbnail: no frames section
    assert not dom.find("canvas") and [
        e["attrs"]["data-device"] for e in dom.find("tr", class_="device")
    ] == ["plain"]

    # a detector's prediction (no detector model ships in tests/data) over a real thumbnail, which
    # arrives first: the page draws it, then again with the boxes once the prediction is in
    jpeg = encode(Image.open(DATA / "hot_dog.jpg"), 320)
    assert jpeg is not None
    pred = samples.detection(device="cam", seq=41)
    pred["detections"].append({"index": 52, "label": "hot dog", "score": 0.66, "box": [0.3, 0.05, 0.9, 0.95]})
    publish(mosquitto, [("edge/cam/thumbnail", thumbnail.tag(jpeg, 41, pred["ts"]))])
    publish(mosquitto, [("edge/cam/predictions", pred)])
    frame = wait_frame(url, "cam", 41)
    w, h = frame["width"], frame["height"]
    assert max(w, h) == 320
    r = chromium(url, tmp_path, "--virtual-time-budget=3000", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    dom = Dom(r.stdout)
    (canvas,) = dom.find("canvas")
    shapes = json.loads(canvas["attrs"]["data-shapes"])
    assert_drawn(shapes, pred, w, h)
    assert [b["label"] for b in shapes["boxes"]] == ["person 0.80", "hot dog 0.66"]
    assert (canvas["attrs"]["width"], canvas["attrs"]["height"]) == (str(w), str(h))
    (fig,) = dom.find("figure", class_="frame")
    assert (
        fig["attrs"]["data-device"] == "cam" and "seq 41" in fig["text"] and "hot dog, person" in fig["text"]
    )


# --- the pieces ---------------------------------------------------------------------------------------


def test_tag_round_trip_and_refusals() -> None:
    jpeg = encode(Image.new("RGB", (64, 48), (200, 10, 10)))
    assert jpeg is not None
    tagged = thumbnail.tag(jpeg, 12, TS)
    assert thumbnail.read_tag(tagged) == thumbnail.Tag(12, TS)
    assert np.asarray(Image.open(io.BytesIO(tagged)).convert("RGB"))[24, 32].tolist()[0] > 180  # still a JPEG
    assert thumbnail.read_tag(jpeg) is None  # untagged
    assert thumbnail.read_tag(b"\x89PNG\r\n\x1a\n") is None
    assert thumbnail.read_tag(tagged.replace(b'"seq":12', b'"seq":"x"')) is None
    with pytest.raises(ValueError, match="not a JPEG"):
        thumbnail.tag(b"GIF89a", 1, TS)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "I;16", "P"])
def test_encode_caps_size_and_bytes_for_any_mode(mode: str) -> None:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8))
    img = (
        Image.fromarray((rng.integers(0, 65536, (900, 1200))).astype(np.uint16))
        if mode == "I;16"
        else rgb.convert(mode)
    )
    for cap in (8 * 1024, 64 * 1024):
        jpeg = encode(img, 320, 70, cap)
        assert jpeg is not None and len(jpeg) <= cap - thumbnail.HEADER_ROOM
        out = Image.open(io.BytesIO(jpeg))
        assert max(out.size) <= 320 and abs(out.size[0] / out.size[1] - 4 / 3) < 0.02
    small = encode(Image.new("RGB", (40, 30)), 320)  # never upscaled
    assert small is not None and Image.open(io.BytesIO(small)).size == (40, 30)


def test_rate_limit_and_unrenderable_inputs() -> None:
    now = [100.0]
    t = Thumbnails(rate=2.0, clock=lambda: now[0])
    got = []
    for _ in range(40):  # 16 inputs a second for 2.5 s: 2 thumbnails a second, the first at once
        got.append(t.due())
        now[0] += 1 / 16
    assert [i for i, g in enumerate(got) if g] == [0, 8, 16, 24, 32]
    jpeg = t.render(Image.open(DATA / "cat.bmp"), 3, TS)
    assert jpeg is not None and thumbnail.read_tag(jpeg) == thumbnail.Tag(3, TS) and t.published == 1
    noise = Image.fromarray(np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    assert Thumbnails(max_bytes=300).render(noise, 4, TS) is None  # nothing fits: skipped, not an error


def test_fleet_pairs_in_either_order_and_bounds_what_it_serves() -> None:
    jpeg = encode(Image.open(DATA / "cat.bmp"))
    assert jpeg is not None
    f = Fleet(thumbnails=True)
    # prediction first, thumbnail after
    f.ingest("edge/a/predictions", json.dumps(samples.detection("a", seq=5)).encode())
    assert isinstance(f.ingest("edge/a/thumbnail", thumbnail.tag(jpeg, 5, TS)), Thumbnail)
    frame = f.frame("a")
    assert frame is not None and frame["prediction"]["detections"][0]["label"] == "person"
    # thumbnail first: unpaired until its prediction comes
    f.ingest("edge/a/thumbnail", thumbnail.tag(jpeg, 6, TS))
    assert f.frame("a")["prediction"] is None  # type: ignore[index]
    assert f.snapshot()["devices"][0]["thumbnail"]["paired"] is False
    f.ingest("edge/a/predictions", json.dumps(samples.detection("a", seq=6)).encode())
    assert f.frame("a")["prediction"]["seq"] == 6  # type: ignore[index]
    assert f.snapshot()["devices"][0]["thumbnail"]["paired"] is True
    assert f.frame("nobody") is None

    # a hostile publisher: huge predictions and an oversized or untagged "thumbnail"
    flood = samples.detection("a", seq=7)
    flood["detections"] = [
        {"index": i, "label": "x" * 5000, "score": 0.5, "box": [0.1, 0.1, 0.2, 0.2]} for i in range(5000)
    ]
    f.ingest("edge/a/predictions", json.dumps(flood).encode())
    f.ingest("edge/a/thumbnail", thumbnail.tag(jpeg, 7, TS))
    served = json.dumps(f.frame("a")).encode()
    overlay = watch_state.OVERLAY_ITEMS["detections"] * (watch_state.LABEL_CHARS + 120)
    assert len(served) <= len(thumbnail.tag(jpeg, 7, TS)) * 4 / 3 + overlay + 2048
    big = thumbnail.tag(b"\xff\xd8" + b"\0" * watch_state.THUMBNAIL_MAX_BYTES, 8, TS)
    assert isinstance(f.ingest("edge/a/thumbnail", big), Malformed)
    assert isinstance(f.ingest("edge/a/thumbnail", jpeg), Malformed)  # no tag: cannot be paired
    assert f.frame("a")["seq"] == 7  # type: ignore[index]


def test_the_kept_picture_is_the_original_not_the_letterboxed_input() -> None:
    from edge.inference.pipeline import Pipeline, Settings
    from edge.inference.preprocess import Normalization
    from edge.model.runtime import load_model

    model = load_model(DATA / "movenet_single_pose_lightning_ptq.tflite", threads=1)
    pipe = Pipeline(model, {}, Normalization(), Settings(), resize="letterbox")
    data = (DATA / "squat.bmp").read_bytes()
    assert pipe.prepare(data, "squat").image is None  # not kept unless asked: no memory held
    prepared = pipe.prepare(data, "squat", keep_image=True)
    assert prepared.image is not None and prepared.image.size == (500, 610)
    assert prepared.geometry is not None and prepared.geometry.content != (0, 0, 192, 192)  # it was padded
    assert pipe.invoke(prepared).image is prepared.image  # handed on to the finisher


def test_thumbnail_flags_and_keys_reach_the_config() -> None:
    from edge.agent.cli import _flags, _parser
    from edge.agent.config import load_config

    default = load_config(flags={}, environ={}).postprocess
    assert (default.publish_thumbnail, default.thumbnail_size, default.thumbnail_rate) == (False, 320, 1.0)
    assert (default.thumbnail_quality, default.thumbnail_max_bytes) == (70, 64 * 1024)
    args = _parser().parse_args(
        ["run", "--publish-thumbnail", "--thumbnail-size", "240", "--thumbnail-rate", "0.5"]
    )
    pp = load_config(
        flags=_flags(args),
        environ={"EDGE_POSTPROCESS_THUMBNAIL_QUALITY": "60", "EDGE_POSTPROCESS_THUMBNAIL_MAX_BYTES": "20000"},
    ).postprocess
    assert (pp.publish_thumbnail, pp.thumbnail_size, pp.thumbnail_rate) == (True, 240, 0.5)
    assert (pp.thumbnail_quality, pp.thumbnail_max_bytes) == (60, 20000)
    from edge.errors import EdgeError

    with pytest.raises(EdgeError, match="thumbnail_rate"):
        load_config(flags={"postprocess": {"thumbnail_rate": 0}}, environ={})


def test_a_flood_of_requests_gets_thumbnails_at_the_rate_limit_only(
    mosquitto: Mosquitto, capture: Any, tmp_path: Path
) -> None:
    sub = capture("edge/flood/#")
    agent = AgentProcess(
        agent_command(
            mosquitto,
            "flood",
            tmp_path / "state",
            "--model",
            str(DATA / "movenet_single_pose_lightning_ptq.tflite"),
            "--source",
            "mqtt",
            "--publish-thumbnail",
            "--thumbnail-rate",
            "2",
            "--threads",
            "1",
        ),
        tmp_path / "agent.log",
    )
    n = 40
    try:
        sub.wait(lambda s: s.json("edge/flood/status"), 60, "the agent's status")
        time.sleep(0.5)
        squat = (DATA / "squat.bmp").read_bytes()
        for i in range(n):
            sub.publish(f"edge/flood/infer/r{i}", squat)
        preds = sub.wait(
            lambda s: len(s.json("edge/flood/predictions")) >= n and s.json("edge/flood/predictions"), 60
        )
        time.sleep(0.5)  # a last thumbnail in flight
    finally:
        agent.terminate()
    thumbs = [thumbnail.read_tag(bytes(m.payload)) for m in sub.on("edge/flood/thumbnail")]
    stamps = sorted(datetime.fromisoformat(p["ts"].replace("Z", "+00:00")).timestamp() for p in preds)
    span = stamps[-1] - stamps[0]
    # 2 a second at most (the first at once), whatever the 40 requests' pace; each tied to its prediction.
    # One more allowed: the limiter decides when an input is prepared, a little before its prediction's ts.
    assert 1 <= len(thumbs) <= 2 * span + 2, (len(thumbs), span)
    assert len(thumbs) < n / 4
    by_seq = {p["seq"]: p for p in preds}
    assert all(t is not None and by_seq[t.seq]["ts"] == t.ts for t in thumbs)


def test_a_once_run_on_one_image_publishes_its_thumbnail(
    mosquitto: Mosquitto, capture: Any, tmp_path: Path
) -> None:
    from tests.support.agent import run_agent

    # --once reads the file before the broker connection is up; its thumbnail (QoS 0) used to be skipped
    sub = capture("edge/once/#")
    done = run_agent(
        mosquitto,
        "once",
        tmp_path / "state",
        "--model",
        str(DATA / "movenet_single_pose_lightning_ptq.tflite"),
        "--source",
        str(DATA / "squat.bmp"),
        "--publish-thumbnail",
        "--once",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (msg,) = sub.wait_for("edge/once/thumbnail", timeout=10)
    tag = thumbnail.read_tag(msg.payload)
    assert tag is not None and tag.seq == 1
