"""Build the offline bundle: wheels for the device, models, labels, config, unit, install scripts, manifest."""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import edge
from edge.contract.messages import utc_iso
from edge.digest import sha256_file, sha256_hex
from edge.flash import BUNDLE_DIR, wheels
from edge.flash.manifest import (
    MANIFEST,
    SUMS,
    BundleError,
    FileEntry,
    Manifest,
    ModelEntry,
    Target,
    bundle_id,
    sums_text,
)
from edge.model import metadata as model_metadata
from edge.model import tflite_file
from edge.model.labels import read_labels

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SERVICE = "edge-agent"
AGENT_RUNTIME_NAMES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    manifest: Manifest
    size_bytes: int
    sha256: str


def is_edgetpu_model(custom_ops: tuple[str, ...] | list[str]) -> bool:
    # edge.model.delegates would import the runtimes (and numpy): the host tool only needs the op name.
    return "edgetpu-custom-op" in custom_ops


def cpu_twin_path(model: Path) -> Path | None:
    """``x_edgetpu.tflite`` -> ``x.tflite`` when it exists (edgetpu_compiler's naming, as edge.model.delegates)."""
    if model.stem.endswith("_edgetpu"):
        twin = model.with_name(model.stem[: -len("_edgetpu")] + model.suffix)
        if twin.is_file():
            return twin
    return None


def template(name: str) -> bytes:
    return resources.files("edge.flash").joinpath("templates", name).read_bytes()


def _check_model(path: Path) -> tflite_file.ModelInfo:
    if not path.is_file():
        raise BundleError(f"model {path} does not exist", "pass the .tflite file edge-convert wrote")
    try:
        return tflite_file.read(path)
    except Exception as exc:
        raise BundleError(
            f"{path} is not a readable .tflite model ({exc})",
            "pass a .tflite file (convert Keras models with edge-convert first)",
        ) from exc


def device_extras(requested: Sequence[str], user_config: Path | None) -> tuple[str, ...]:
    """The extras a bundle carries: those asked for, plus ``signing`` when the config names update keys."""
    unknown = sorted(set(requested) - set(wheels.DEVICE_EXTRAS))
    if unknown:
        raise BundleError(
            f"--extras {','.join(unknown)} is not a device extra",
            "choose from: " + ", ".join(f"{k} ({v})" for k, v in wheels.DEVICE_EXTRAS.items()),
        )
    chosen = set(requested)
    if user_config is not None and "signing" not in chosen:
        try:
            ota = tomllib.loads(user_config.read_text()).get("ota", {})
        except (OSError, tomllib.TOMLDecodeError):
            ota = {}  # agent_config() reports an unreadable config with its own message
        if isinstance(ota, dict) and ota.get("public_keys"):
            chosen.add("signing")  # the agent refuses to start without cryptography for its update keys
    return tuple(sorted(chosen))


def agent_config(
    user_config: Path | None,
    model_file: str,
    labels_file: str | None,
    runtime: str,
    broker: str | None,
    device_id: str | None,
    source: str | None,
) -> str:
    """The agent's TOML: the user's, with the model, labels, runtime and state dir pointed into the release."""
    data: dict[str, Any] = {}
    if user_config is not None:
        try:
            data = tomllib.loads(user_config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BundleError(
                f"--config {user_config} is not readable TOML ({exc})",
                "fix the file (edge-agent check-config shows the keys)",
            ) from exc
    data["state_dir"] = "@STATE_DIR@"
    model = data.setdefault("model", {})
    model["path"] = f"@RELEASE@/{model_file}"
    model["runtime"] = AGENT_RUNTIME_NAMES[runtime]
    if labels_file:
        model["labels"] = f"@RELEASE@/{labels_file}"
    mqtt = data.setdefault("mqtt", {})
    if broker:
        mqtt["broker"] = broker
    if device_id:
        mqtt["device_id"] = device_id
    src = data.setdefault("source", {})
    if source:
        src["spec"] = source
    src.setdefault("spec", "mqtt")  # a service with no source of its own answers <prefix>/<device>/infer
    data = {k: v for k, v in data.items() if v != {}}
    text = "# Written by edge-flash; install.sh fills in the release and state directories.\n" + _toml(data)
    _check_agent_config(text)
    return text


def _toml(data: dict[str, Any]) -> str:
    try:
        import tomli_w  # host side only: the device reads TOML, it never writes it
    except ImportError as exc:
        raise BundleError(
            "edge-flash bundle writes the agent's TOML with tomli-w, which is not installed",
            "pip install 'edge-ml-toolkit[flash]'",
        ) from exc
    return tomli_w.dumps(data)


def _check_agent_config(text: str) -> None:
    """The agent's own validation, here rather than as a crash loop on the device."""
    try:
        from edge.agent.config import check_file
    except ImportError:  # pragma: no cover - a host with an edge package older than the agent
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agent.toml"
        path.write_text(
            text.replace("@RELEASE@", "/opt/edge-agent/releases/x").replace("@STATE_DIR@", "/var/lib/x")
        )
        problems = check_file(path)
    if problems:
        listed = "; ".join(f"{key} = {value!r}: {msg}" for key, value, msg in problems)
        raise BundleError(
            f"the agent config is invalid: {listed}",
            "fix --config (edge-agent check-config FILE lists the problems)",
        )


def _gather_models(models: list[Path]) -> list[tuple[Path, bool]]:
    """(file, is_edgetpu) for every model, each Edge TPU model followed by its CPU twin when it has one."""
    out: list[tuple[Path, bool]] = []
    for m in models:
        tpu = is_edgetpu_model(_check_model(m).custom_ops)
        out.append((m, tpu))
        twin = cpu_twin_path(m) if tpu else None
        if twin is not None and all(twin.resolve() != p.resolve() for p, _ in out):
            _check_model(twin)
            out.append((twin, False))
    names = [p.name for p, _ in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise BundleError(f"two models share the file name {sorted(dupes)}", "rename one of them")
    return out


def build(
    models: list[Path],
    out: Path,
    *,
    arch: str = "aarch64",
    python: str = "3.11",
    runtime: str = "ai-edge-litert",
    glibc: str = "2.36",
    labels: Path | None = None,
    config: Path | None = None,
    broker: str | None = None,
    device_id: str | None = None,
    source: str | None = None,
    agent_wheel: Path | None = None,
    find_links: list[Path] | None = None,
    extras: Sequence[str] = (),
    log: Any = None,
) -> BuiltBundle:
    """Write the bundle to ``out`` (a .tar.gz) and return what it holds.

    ``extras`` are optional device features (``wheels.DEVICE_EXTRAS``); ``signing`` is added by
    itself when the config names update keys, so the bundle can do what its config asks.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    extras = device_extras(extras, config)
    arch = wheels.normalize_arch(arch)
    if python not in PYTHONS:
        raise BundleError(
            f"--python must be one of {', '.join(PYTHONS)}; received {python!r}",
            "Raspberry Pi OS bookworm has 3.11, trixie 3.13",
        )
    if runtime not in wheels.RUNTIME_EXTRAS:
        raise BundleError(
            f"--runtime must be ai-edge-litert or tflite-runtime; received {runtime!r}",
            "ai-edge-litert is the maintained one; tflite-runtime 2.14 needs numpy<2",
        )
    if not models:
        raise BundleError("no --model given", "pass the .tflite the agent should run")
    if labels is not None and not labels.is_file():
        raise BundleError(
            f"labels file {labels} does not exist", "pass the labels.txt of the model, or omit it"
        )
    model_files = _gather_models([Path(m) for m in models])
    if labels is not None:
        # A labels file that names fewer classes than the model outputs is refused here, not on the device.
        # Without one the agent takes the labels edge-convert embedded in the model.
        first = model_files[0][0]
        outputs = _check_model(first).subgraphs[0].outputs
        model_metadata.resolve(
            first,
            labels=read_labels(labels),
            classes=model_metadata.classifier_classes([t.shape for t in outputs]),
        )

    with tempfile.TemporaryDirectory(prefix="edge-bundle-") as tmp:
        stage = Path(tmp) / BUNDLE_DIR
        (stage / "wheels").mkdir(parents=True)
        if agent_wheel is None:
            agent_wheel = wheels.build_agent_wheel(Path(tmp) / "agent")
        say(f"downloading wheels for {arch}, Python {python}, glibc {glibc}, {runtime} ...")
        whls = wheels.download(
            agent_wheel, runtime, arch, python, glibc, stage / "wheels", find_links, extras=extras
        )
        parsed = {w.name: wheels.WheelName.parse(w.name) for w in whls}
        by_dist = {p.dist: p for p in parsed.values()}
        rt = by_dist[wheels.RUNTIME_DISTS[runtime]]
        np_whl = by_dist.get("numpy")
        agent = by_dist.get("edge_ml_toolkit")
        if np_whl is None or agent is None:
            raise BundleError("pip resolved no numpy or no edge-ml-toolkit wheel", "report this as a bug")
        if runtime == "tflite-runtime" and int(np_whl.version.split(".")[0]) >= 2:
            raise BundleError(
                f"tflite-runtime bundle got numpy {np_whl.version}; it crashes with numpy 2",
                "report this as a bug (the tflite-runtime extra pins numpy<2)",
            )
        reqs = [f"{wheels.DIST}[{','.join((wheels.RUNTIME_EXTRAS[runtime], *extras))}]=={agent.version}"]
        reqs += sorted(
            f"{p.dist}=={p.version}" for p in parsed.values() if p.dist not in ("edge_ml_toolkit", "pip")
        )
        (stage / "requirements.txt").write_text("".join(r + "\n" for r in reqs))

        (stage / "models").mkdir()
        model_entries = []
        for path, tpu in model_files:
            shutil.copyfile(path, stage / "models" / path.name)
            digest = sha256_file(stage / "models" / path.name)
            model_entries.append(ModelEntry(file=f"models/{path.name}", sha256=digest, edgetpu=tpu))
        labels_file = None
        if labels is not None:
            labels_file = f"models/{labels.name}"
            shutil.copyfile(labels, stage / labels_file)
        (stage / "config").mkdir()
        (stage / "config" / "agent.toml").write_text(
            agent_config(config, model_entries[0].file, labels_file, runtime, broker, device_id, source)
        )
        (stage / "systemd").mkdir()
        (stage / "systemd" / f"{SERVICE}.service").write_bytes(template(f"{SERVICE}.service"))
        (stage / "systemd" / f"{SERVICE}.sysusers").write_bytes(template(f"{SERVICE}.sysusers"))
        for script in ("install.sh", "uninstall.sh"):
            (stage / script).write_bytes(template(script))
            (stage / script).chmod(0o755)

        # The id covers every file but bundle.env, which carries the id to install.sh.
        files: dict[str, FileEntry] = {}
        for f in sorted(stage.rglob("*")):
            if f.is_file():
                files[f.relative_to(stage).as_posix()] = FileEntry(
                    sha256=sha256_file(f), size=f.stat().st_size
                )
        bid = bundle_id(files)
        env = (
            f"EDGE_BUNDLE_ID={bid}\nEDGE_ARCH={arch}\nEDGE_PYTHON={python}\nEDGE_RUNTIME={runtime}\n"
            f"EDGE_AGENT_VERSION={agent.version}\n"
        ).encode()
        (stage / "bundle.env").write_bytes(env)
        files["bundle.env"] = FileEntry(sha256=sha256_hex(env), size=len(env))
        manifest = Manifest(  # schema: the default, this edge-flash's format
            bundle_id=bid,
            created_at=utc_iso(timespec="seconds"),
            created_by=f"edge-flash {edge.__version__}",
            target=Target(arch=arch, python=python, glibc=glibc, runtime=runtime),  # type: ignore[arg-type]
            agent_version=agent.version,
            runtime_version=rt.version,
            numpy_version=np_whl.version,
            models=model_entries,
            labels=labels_file,
            config="config/agent.toml",
            requirements="requirements.txt",
            files=files,
        )
        manifest_text = manifest.to_json()
        (stage / MANIFEST).write_text(manifest_text)
        (stage / SUMS).write_text(
            sums_text(
                {
                    **{n: e.sha256 for n, e in files.items()},
                    MANIFEST: sha256_hex(manifest_text.encode()),
                }
            )
        )
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_tar(stage, out)
    digest = sha256_file(out)
    Path(f"{out}.sha256").write_text(f"{digest}  {out.name}\n")
    return BuiltBundle(path=out, manifest=manifest, size_bytes=out.stat().st_size, sha256=digest)


def _write_tar(stage: Path, out: Path) -> None:
    now = int(time.time())
    tmp_out = out.with_name(out.name + ".partial")
    # Wheels are zip files already: a light gzip level costs little size and much less time.
    with tarfile.open(tmp_out, "w:gz", compresslevel=3, format=tarfile.GNU_FORMAT) as tar:

        def add_dir(rel: str) -> None:
            info = tarfile.TarInfo(rel)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(info)

        add_dir(BUNDLE_DIR)
        for f in sorted(stage.rglob("*")):
            rel = f"{BUNDLE_DIR}/{f.relative_to(stage).as_posix()}"
            if f.is_dir():
                add_dir(rel)
                continue
            info = tarfile.TarInfo(rel)
            info.size, info.mtime = f.stat().st_size, now
            info.mode = 0o755 if f.stat().st_mode & 0o100 else 0o644
            info.uname = info.gname = "root"
            with open(f, "rb") as fh:
                tar.addfile(info, fh)
    tmp_out.replace(out)
