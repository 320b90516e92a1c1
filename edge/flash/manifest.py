"""The bundle manifest, and the checks that a bundle is whole before anything installs it.

A bundle is ``edge-bundle/`` in a gzipped tar: ``manifest.json`` lists the
sha256 and size of every other file, ``SHA256SUMS`` repeats them in the
format of ``sha256sum -c`` (so the device checks them with coreutils alone,
before Python or pip run) and covers ``manifest.json`` too.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.digest import sha256_hex, sha256_stream
from edge.errors import EdgeError
from edge.flash import BUNDLE_DIR

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SCHEMA = 1


class BundleError(EdgeError):
    """A bundle is corrupt, incomplete, or not meant for the target."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Record):
    sha256: str = Field(description="hex sha256 of the file's bytes", pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, description="bytes")


class Target(_Record):
    arch: Literal["aarch64", "x86_64"] = Field(description="platform.machine() of the device")
    python: str = Field(description="major.minor of the device's /usr/bin/python3", pattern=r"^3\.\d+$")
    glibc: str = Field(description="newest manylinux glibc the wheels may need", pattern=r"^2\.\d+$")
    runtime: Literal["ai-edge-litert", "tflite-runtime"] = Field(description="TFLite runtime distribution")


class ModelEntry(_Record):
    file: str = Field(description="path inside the bundle")
    sha256: str = Field(description="hex sha256")
    edgetpu: bool = Field(
        description="compiled for the Edge TPU (its CPU twin, when bundled, sits beside it)"
    )


class Manifest(_Record):
    schema_: int = Field(SCHEMA, alias="schema", description="manifest format version")
    kind: Literal["edge-bundle"] = "edge-bundle"
    bundle_id: str = Field(
        description="first 16 hex digits of the sha256 over the file list (but bundle.env, which carries it); names the release"
    )
    created_at: str = Field(description="UTC ISO 8601")
    created_by: str = Field(description="edge-flash version")
    target: Target
    agent_version: str = Field(description="version of the bundled edge-ml-toolkit wheel")
    runtime_version: str = Field(description="version of the bundled runtime wheel")
    numpy_version: str = Field(description="version of the bundled numpy wheel")
    models: list[ModelEntry] = Field(description="models; the first one is what the agent runs")
    labels: Optional[str] = Field(None, description="labels file inside the bundle")  # noqa: UP045 (pydantic on 3.9)
    config: str = Field(description="agent TOML inside the bundle (@RELEASE@/@STATE_DIR@ filled at install)")
    requirements: str = Field(description="pinned requirements pip installs offline from wheels/")
    files: dict[str, FileEntry] = Field(
        description="every file of the bundle except manifest.json and SHA256SUMS"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BundleError(
                f"{MANIFEST} is not JSON ({exc})", "rebuild the bundle with edge-flash bundle"
            ) from exc
        if isinstance(data, dict) and data.get("schema") not in (None, SCHEMA):
            raise BundleError(
                f"{MANIFEST} has schema {data.get('schema')!r}, this edge-flash reads {SCHEMA}",
                "use the edge-flash version that built the bundle, or rebuild it",
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise BundleError(
                f"{MANIFEST} is not a valid bundle manifest: {exc}",
                "rebuild the bundle with edge-flash bundle",
            ) from exc


def bundle_id(files: dict[str, FileEntry]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{files[name].sha256}  {name}\n".encode())
    return h.hexdigest()[:16]


def sums_text(files: dict[str, str]) -> str:
    """``sha256sum -c`` input; paths relative to the bundle directory."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))


def _safe_member(name: str) -> str:
    """Path relative to BUNDLE_DIR, refusing anything that could escape it."""
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm.startswith("..") or "/../" in f"/{name}/":
        raise BundleError(f"bundle member {name!r} points outside the bundle", "do not install this bundle")
    if norm == BUNDLE_DIR:
        return ""
    prefix = BUNDLE_DIR + "/"
    if not norm.startswith(prefix):
        raise BundleError(
            f"bundle member {name!r} is not under {BUNDLE_DIR}/", "rebuild the bundle with edge-flash"
        )
    return norm[len(prefix) :]


def verify_bundle(path: Path) -> Manifest:
    """Read the whole bundle and check every file against the manifest; returns the manifest.

    Refuses missing, extra, resized or altered files, links and devices, and a
    ``SHA256SUMS`` that disagrees with ``manifest.json``.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(
            f"bundle {path} does not exist", "build one: edge-flash bundle --model M -o bundle.tar.gz"
        )
    seen: dict[str, tuple[str, int, int]] = {}
    manifest_bytes = sums_bytes = None
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                rel = _safe_member(member.name)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleError(
                        f"bundle member {member.name!r} is a link or device, bundles hold plain files",
                        "do not install this bundle; rebuild it with edge-flash bundle",
                    )
                f = tar.extractfile(member)
                assert f is not None
                if rel in (MANIFEST, SUMS):
                    data = f.read()
                    if rel == MANIFEST:
                        manifest_bytes = data
                    else:
                        sums_bytes = data
                    seen[rel] = (sha256_hex(data), len(data), member.mode)
                else:
                    digest, size = sha256_stream(f)
                    seen[rel] = (digest, size, member.mode)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(
            f"bundle {path} is not a readable .tar.gz ({exc})",
            "copy it again (it is truncated or corrupt), or rebuild it",
        ) from exc
    if manifest_bytes is None:
        raise BundleError(
            f"bundle {path} has no {BUNDLE_DIR}/{MANIFEST}", "rebuild it with edge-flash bundle"
        )
    manifest = Manifest.from_json(manifest_bytes)
    problems = []
    for name, entry in sorted(manifest.files.items()):
        if name not in seen:
            problems.append(f"{name}: missing")
        elif seen[name][0] != entry.sha256:
            problems.append(f"{name}: sha256 {seen[name][0][:16]}... expected {entry.sha256[:16]}...")
        elif seen[name][1] != entry.size:
            problems.append(f"{name}: {seen[name][1]} bytes, expected {entry.size}")
    extra = sorted(set(seen) - set(manifest.files) - {MANIFEST, SUMS})
    problems += [f"{name}: not in the manifest" for name in extra]
    expected_sums = sums_text(
        {
            **{n: e.sha256 for n, e in manifest.files.items()},
            MANIFEST: sha256_hex(manifest_bytes),
        }
    )
    if sums_bytes is None or sums_bytes.decode(errors="replace") != expected_sums:
        problems.append(f"{SUMS}: missing or disagrees with {MANIFEST}")
    if bundle_id({n: e for n, e in manifest.files.items() if n != "bundle.env"}) != manifest.bundle_id:
        problems.append(f"bundle_id {manifest.bundle_id} does not match its file list")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise BundleError(
            f"bundle {path} failed its sha256 check: {shown}",
            "do not install it: copy it again, or rebuild it with edge-flash bundle",
        )
    return manifest
