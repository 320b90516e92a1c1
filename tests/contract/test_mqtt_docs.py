"""The consumer examples in docs/mqtt.md work as printed (run against a real broker)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from edge.contract import schemas
from tests.support import samples
from tests.support.broker import Mosquitto
from tests.support.mqtt import publish
from tests.support.process import Proc

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def blocks(lang: str) -> list[str]:
    section = DOC.read_text().split("## Consuming the messages", 1)[1]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def test_schema_links_point_at_the_shipped_files() -> None:
    section = DOC.read_text().split("## Consuming the messages", 1)[1]
    linked = re.findall(r"\(\.\./edge/contract/schemas/(\w+)\.json\)", section)
    assert sorted(linked) == sorted(schemas.KINDS)
    for kind in linked:
        assert (DOC.parent / ".." / "edge" / "contract" / "schemas" / f"{kind}.json").exists()
    (example,) = [b for b in blocks("json") if '"seq"' in b]
    assert schemas.problems("predictions", json.loads(example)) == []


def test_python_example_prints_valid_predictions_and_skips_malformed(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    (code,) = blocks("python")
    code = code.replace(
        'client.connect("broker.lan", 1883)', f'client.connect("127.0.0.1", {mosquitto.port})'
    )
    code = code.replace(
        "client.on_connect, client.on_message = on_connect, on_message",
        "client.on_connect, client.on_message = on_connect, on_message\n"
        "client.on_subscribe = lambda *a: print('subscribed', flush=True)",
    )
    script = tmp_path / "example.py"
    script.write_text(
        "import builtins, functools\nprint = functools.partial(builtins.print, flush=True)\n" + code
    )
    proc = Proc([sys.executable, str(script)])
    try:
        assert proc.line().strip() == "subscribed"
        bad: dict[str, Any] = samples.prediction("pi-kitchen", seq=1)
        del bad["latency_ms"]
        publish(
            mosquitto,
            [
                ("edge/pi-kitchen/predictions", bad),
                ("edge/pi-kitchen/predictions", samples.prediction("pi-kitchen", seq=2, total=4.5)),
                ("edge/pi-kitchen/availability", "online"),
            ],
        )
        assert proc.line().startswith("ignoring edge/pi-kitchen/predictions")
        assert proc.line().split() == ["pi-kitchen", "2", "seven", "0.91", "4.5", "ms"]
        assert proc.line().split() == ["pi-kitchen", "availability", "online"]
    finally:
        proc.kill()


def test_node_red_flow_is_importable_json() -> None:
    (flow,) = [b for b in blocks("json") if "mqtt in" in b]
    nodes = {n["id"]: n for n in json.loads(flow)}
    assert nodes["edge_in"]["topic"] == "edge/+/predictions" and nodes["edge_in"]["datatype"] == "json"
    assert nodes["edge_in"]["broker"] in nodes
    for node in nodes.values():
        for wire in node.get("wires", []):
            assert all(target in nodes for target in wire)


def test_node_red_function_runs_in_a_real_js_engine(tmp_path: Path) -> None:
    """The function node's body, run by headless Chromium's V8 on contract payloads."""
    from tests.watch.test_dashboard import chromium

    (flow,) = [b for b in blocks("json") if "mqtt in" in b]
    body = next(n for n in json.loads(flow) if n["type"] == "function")["func"]
    low = samples.prediction("pi-1", seq=2, score=0.5)
    generic = samples.generic("pi-1", seq=3)
    cases = [samples.prediction("pi-1", seq=1, label="seven", score=0.91, total=4.5), low, generic]
    page = tmp_path / "fn.html"
    page.write_text(
        "<html><body><pre id=out></pre><script>\n"
        f"function node(msg) {{\n{body}\n}}\n"
        f"const cases = {json.dumps(cases)};\n"
        "document.getElementById('out').textContent = JSON.stringify(cases.map(p => node({payload: p})));\n"
        "</script></body></html>"
    )
    r = chromium(page.as_uri(), tmp_path, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(
        re.search(r"<pre id=\"out\">(.*?)</pre>", r.stdout, flags=re.S)
        .group(1)  # type: ignore[union-attr]
        .replace("&quot;", '"')
    )
    assert out[0] == {"payload": "seven", "device": "pi-1", "latency": 4.5}
    assert out[1] is None and out[2] is None  # below 0.8, and no top_k
