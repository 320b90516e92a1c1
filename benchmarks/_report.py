"""What every MQTT benchmark records beside its figures, and how it writes its reference file."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from paho import mqtt as paho_mqtt


def mqtt_environment() -> dict[str, Any]:
    """The versions and load that explain a figure (the machine is shared: compare ratios, not rates)."""
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "paho_mqtt": paho_mqtt.__version__,
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": mosquitto.split("\n")[0],
        "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }


def write_result(path: Path | None, result: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
