"""Wheels for another machine: pip download for the target's platform, and the agent's own wheel.

The device installs offline, so the bundle must hold a wheel for every
dependency built for the device's CPU, glibc and Python: that is what
``pip download --platform ... --python-version ...`` resolves, with
``--only-binary`` because nothing can be compiled on the device.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import edge
from edge.errors import EdgeError

DIST = "edge-ml-toolkit"
RUNTIME_EXTRAS = {"ai-edge-litert": "agent", "tflite-runtime": "tflite-runtime"}
# Optional device features a bundle can carry (pyproject extras that make sense on a board).
DEVICE_EXTRAS = {
    "signing": "verify signed model updates (cryptography)",
    "camera": "camera, RTSP and MJPEG sources (OpenCV)",
}
RUNTIME_DISTS = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
ARCHES = ("aarch64", "x86_64")
ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "armhf": "armv7l", "armv7": "armv7l", "arm": "armv7l"}
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same wheel bytes


class WheelError(EdgeError):
    """The target's wheels cannot be had."""


def normalize_arch(arch: str) -> str:
    arch = ARCH_ALIASES.get(arch.lower(), arch.lower())
    if arch == "armv7l":
        raise WheelError(
            "--arch armv7l (32-bit Raspberry Pi OS) cannot get a working agent: ai-edge-litert publishes no "
            "armv7l wheels, tflite-runtime 2.14 has none for Python 3.11 either, and numpy/pydantic-core would "
            "have to be compiled on the board",
            "flash the 64-bit Raspberry Pi OS (Pi 3, 4, 5, Zero 2 W and CM3/4/5 run it) and use --arch aarch64",
        )
    if arch not in ARCHES:
        raise WheelError(
            f"--arch must be one of {', '.join(ARCHES)} (or armv7l, refused); received {arch!r}",
            "use aarch64 for a 64-bit Raspberry Pi OS, x86_64 for a PC",
        )
    return arch


def platform_tags(arch: str, glibc: str) -> list[str]:
    """Every manylinux tag a machine with this glibc accepts (pip does not expand --platform itself)."""
    major, minor = (int(x) for x in glibc.split("."))
    if major != 2:
        raise WheelError(f"--glibc must look like 2.36; received {glibc!r}", "Debian bookworm has 2.36")
    first = 17 if arch == "aarch64" else 5
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, first - 1, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


@dataclass(frozen=True)
class WheelName:
    dist: str  # normalized: lower case, '-' -> '_'
    version: str
    tags: str

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        parts = filename[:-4].split("-")
        if not filename.endswith(".whl") or len(parts) not in (5, 6):
            raise WheelError(f"{filename!r} is not a wheel file name", "pass a .whl built by pip wheel")
        return cls(dist=re.sub(r"[-_.]+", "_", parts[0]).lower(), version=parts[1], tags="-".join(parts[-3:]))


def _project_file() -> Path | None:
    candidate = Path(edge.__file__).resolve().parent.parent / "pyproject.toml"
    return candidate if candidate.is_file() else None


def _requirements() -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """(dependencies, extras, console scripts) from the checkout's pyproject, else the installed metadata."""
    project = _project_file()
    if project is not None:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        data = tomllib.loads(project.read_text())["project"]
        return (
            list(data.get("dependencies", [])),
            dict(data.get("optional-dependencies", {})),
            dict(data.get("scripts", {})),
        )
    try:
        reqs = metadata.requires(DIST) or []
        eps = metadata.entry_points(group="console_scripts")
    except metadata.PackageNotFoundError as exc:
        raise WheelError(
            f"cannot tell the agent's dependencies: neither a source checkout nor an installed {DIST}",
            "pip install edge-ml-toolkit, or pass --agent-wheel",
        ) from exc
    deps = [r for r in reqs if "extra ==" not in r]
    extras: dict[str, list[str]] = {}
    for r in reqs:
        m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", r)
        if m:
            req = re.sub(r";?\s*extra\s*==\s*[\"'][^\"']+[\"']", "", r).strip().rstrip(";").strip()
            extras.setdefault(m.group(1), []).append(req)
    scripts = {ep.name: ep.value for ep in eps if ep.value.startswith("edge.")}
    return deps, extras, scripts


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_agent_wheel(out_dir: Path) -> Path:
    """A pure-Python wheel of the ``edge`` package (the device side only: no converter, no TensorFlow).

    Built by hand rather than by ``pip wheel .`` so it needs neither a source
    checkout, nor setuptools, nor the network, and is byte-for-byte reproducible.
    """
    deps, extras, scripts = _requirements()
    version = edge.__version__
    pkg = Path(edge.__file__).resolve().parent
    dist_info = f"edge_ml_toolkit-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted(pkg.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        files.append((f"edge/{path.relative_to(pkg).as_posix()}", path.read_bytes()))
    meta = ["Metadata-Version: 2.1", f"Name: {DIST}", f"Version: {version}", "Requires-Python: >=3.9"]
    meta += [f"Requires-Dist: {d}" for d in deps]
    for extra, reqs in sorted(extras.items()):
        if extra in ("host", "dev"):
            continue  # TensorFlow and test tools never go to a device
        meta.append(f"Provides-Extra: {extra}")
        for r in reqs:
            req, _, marker = r.partition(";")
            cond = f"({marker.strip()}) and " if marker.strip() else ""
            meta.append(f'Requires-Dist: {req.strip()}; {cond}extra == "{extra}"')
    files.append((f"{dist_info}/METADATA", ("\n".join(meta) + "\n").encode()))
    files.append(
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: edge-flash\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    device_scripts = {k: v for k, v in sorted(scripts.items()) if v.startswith("edge.")}
    if device_scripts:
        eps = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in device_scripts.items())
        files.append((f"{dist_info}/entry_points.txt", eps.encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files)
    record += f"{dist_info}/RECORD,,\n"
    files.append((f"{dist_info}/RECORD", record.encode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"edge_ml_toolkit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, _ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return wheel


def download(
    agent_wheel: Path,
    runtime: str,
    arch: str,
    python: str,
    glibc: str,
    dest: Path,
    find_links: list[Path] | None = None,
    extras: tuple[str, ...] = (),
) -> list[Path]:
    """pip download the agent's closure for the target into ``dest``; returns the wheel files."""
    extra = ",".join((RUNTIME_EXTRAS[runtime], *extras))
    py_nodot = python.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        f"cp{py_nodot}",
        "--abi",
        "abi3",
        "--abi",
        "none",
        "-d",
        str(dest),
    ]
    for tag in platform_tags(arch, glibc):
        cmd += ["--platform", tag]
    for link in find_links or ():
        cmd += ["--find-links", str(link)]
    # pip is bundled too: the device installs with it from its wheel, even where python3-pip is absent.
    cmd += [f"{DIST}[{extra}] @ {agent_wheel.resolve().as_uri()}", "pip"]
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(line for line in proc.stderr.splitlines() if "ignored" not in line)[-1500:]
        fix = "check the network to the package index, or pass --find-links DIR with the wheels"
        if runtime == "tflite-runtime" and "tflite" in tail:
            fix = (
                f"tflite-runtime 2.14 publishes wheels for Python 3.9-3.11 only; for Python {python} "
                "use --runtime ai-edge-litert"
            )
        elif "ai-edge-litert" in tail or "ai_edge_litert" in tail:
            fix = f"ai-edge-litert has no wheel for Python {python} on {arch}: pick another --python"
        raise WheelError(
            f"pip could not get wheels for {arch}, Python {python}, glibc {glibc}, {runtime}:\n{tail}", fix
        )
    wheels = sorted(dest.glob("*.whl"))
    names = {WheelName.parse(w.name).dist for w in wheels}
    if RUNTIME_DISTS[runtime] not in names:
        raise WheelError(
            f"pip resolved no {runtime} wheel for {arch}/Python {python}", "report this as a bug"
        )
    return wheels
