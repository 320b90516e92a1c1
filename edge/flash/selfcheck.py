"""Device side: prove a freshly installed release works before it becomes ``current``.

``install.sh`` runs this with the new venv's Python. It imports the bundled
runtime (this is where a numpy ABI clash or a wheel for the wrong CPU shows
up), loads every bundled model, runs one inference on seeded random input,
checks the model's sha256 and the machine against the manifest, and
validates the rendered agent config with the agent's own checker.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

RUNTIME_MODULES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}


def check(release: Path) -> dict[str, Any]:
    import numpy as np

    from edge.inference.preprocess import random_input
    from edge.model.runtime import load_model

    manifest = json.loads((release / "manifest.json").read_text())
    target = manifest["target"]
    problems: list[str] = []
    if platform.machine() != target["arch"]:
        problems.append(f"this machine is {platform.machine()}, the bundle is for {target['arch']}")
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if py != target["python"]:
        problems.append(f"this Python is {py}, the bundle is for {target['python']}")
    runtime = RUNTIME_MODULES[target["runtime"]]
    models = []
    rng = np.random.default_rng(0)
    for entry in manifest["models"]:
        if entry["edgetpu"]:
            continue  # needs a Coral; its CPU twin (bundled beside it) is checked instead
        lm = load_model(release / entry["file"], runtime=runtime, delegate="cpu")
        if lm.sha256 != entry["sha256"]:
            problems.append(
                f"{entry['file']}: sha256 {lm.sha256} differs from the manifest's {entry['sha256']}"
            )
        interp = lm.interpreter
        for spec in lm.inputs:
            interp.set_tensor(spec.index, random_input(spec, rng))
        t0 = time.perf_counter()
        interp.invoke()
        invoke_ms = (time.perf_counter() - t0) * 1000
        outs = [interp.get_tensor(spec.index) for spec in lm.outputs]
        models.append(
            {
                "file": entry["file"],
                "sha256": lm.sha256,
                "delegate": lm.delegate,
                "invoke_ms": round(invoke_ms, 2),
                "outputs": [list(o.shape) for o in outs],
                "init_ms": round(lm.init_ms, 2),
            }
        )
        rt = lm.runtime
    try:
        from edge.agent.config import check_file
    except ImportError:  # an agent wheel without the config module: nothing to check
        pass
    else:
        cfg = release / manifest["config"]
        problems += [f"{cfg}: {key} = {value!r}: {msg}" for key, value, msg in check_file(cfg)]
    result = {
        "ok": not problems,
        "problems": problems,
        "arch": platform.machine(),
        "python": py,
        "numpy": np.__version__,
        "models": models,
    }
    if models:
        result["runtime"] = {"name": rt.name, "version": rt.version}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.flash.selfcheck", description=__doc__)
    p.add_argument("--release", type=Path, required=True, help="the installed release directory")
    args = p.parse_args(argv)
    try:
        result = check(args.release)
    except Exception as exc:  # any failure means: do not switch to this release
        print(json.dumps({"ok": False, "problems": [f"{type(exc).__name__}: {exc}"]}))
        return 1
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
