"""install.sh on this (x86_64) machine into a throw-away prefix, --no-systemd: releases, refusals, rollback."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.flash.helpers import MOBILENET, clean_env, extract, rewrite, sh


def install(bundle_dir: Path, prefix: Path, *extra: str):
    return sh(
        "bash",
        bundle_dir / "install.sh",
        "--prefix",
        prefix,
        "--no-systemd",
        *extra,
        check=False,
        env=clean_env(),
    )


def test_install_release_reinstall_update_rollback_uninstall(make_bundle, tmp_path: Path) -> None:
    a = make_bundle("x86_64")
    b = make_bundle("x86_64", device_id="second")
    assert a.manifest.bundle_id != b.manifest.bundle_id
    prefix = tmp_path / "opt" / "edge-agent"

    first = install(extract(a.path, tmp_path / "a"), prefix)
    assert first.returncode == 0, first.stderr
    rel_a = f"releases/{a.manifest.bundle_id}"
    assert os.readlink(prefix / "current") == rel_a and not (prefix / "previous").exists()
    check = json.loads((prefix / "current" / "selfcheck.json").read_text())
    assert check["ok"] and check["arch"] == "x86_64" and check["runtime"]["name"] == "ai_edge_litert"
    assert check["models"][0]["outputs"] == [[1, 1001]]
    assert not (prefix / "current" / "wheels").exists()  # the venv holds them now
    cfg = (prefix / "current" / "config" / "agent.toml").read_text()
    assert f'path = "{prefix}/{rel_a}/models/{MOBILENET}"' in cfg and f'state_dir = "{prefix}/state"' in cfg
    # the wrapper runs the release's own venv, with nothing from this test run on its path
    probe = sh(
        prefix / "current" / "venv" / "bin" / "python",
        "-c",
        "import edge, numpy, ai_edge_litert; print(edge.__file__)",
        env=clean_env(),
        cwd=tmp_path,
    )
    assert probe.stdout.strip().startswith(str(prefix / "current" / "venv" / "lib"))
    assert (prefix / "bin" / "edge-agent").read_text().count(f"{prefix}/current/venv/bin/python") == 1

    again = install(extract(a.path, tmp_path / "a2"), prefix)
    assert again.returncode == 0 and "already installed" in again.stderr
    assert os.readlink(prefix / "current") == rel_a and not (prefix / "previous").exists()

    update = install(extract(b.path, tmp_path / "b"), prefix)
    assert update.returncode == 0, update.stderr
    rel_b = f"releases/{b.manifest.bundle_id}"
    assert os.readlink(prefix / "current") == rel_b and os.readlink(prefix / "previous") == rel_a
    assert 'device_id = "second"' in (prefix / "current" / "config" / "agent.toml").read_text()

    back = sh(
        "bash",
        prefix / "current" / "install.sh",
        "--rollback",
        "--prefix",
        prefix,
        "--no-systemd",
        check=False,
        env=clean_env(),
    )
    assert back.returncode == 0, back.stderr
    assert os.readlink(prefix / "current") == rel_a and os.readlink(prefix / "previous") == rel_b
    assert sorted(p.name for p in (prefix / "releases").iterdir()) == sorted(
        [a.manifest.bundle_id, b.manifest.bundle_id]
    )

    gone = sh("bash", prefix / "uninstall.sh", "--prefix", prefix, "--no-systemd", check=False)
    assert gone.returncode == 0, gone.stderr
    assert not (prefix / "releases").exists() and not (prefix / "current").is_symlink()


def test_corrupt_bundle_is_refused_and_the_running_release_stays(make_bundle, tmp_path: Path) -> None:
    a = make_bundle("x86_64")
    prefix = tmp_path / "p"
    assert install(extract(a.path, tmp_path / "a"), prefix).returncode == 0
    before = os.readlink(prefix / "current")
    # same manifest, one model byte changed: what a bad SD card or a flaky copy does
    model = extract(a.path, tmp_path / "orig") / "models" / MOBILENET
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = rewrite(a.path, tmp_path / "bad.tar.gz", {f"models/{MOBILENET}": bytes(data)})
    proc = install(extract(bad, tmp_path / "bad"), prefix)
    assert proc.returncode == 3, proc.stderr
    assert "sha256 check" in proc.stderr and f"models/{MOBILENET}: FAILED" in proc.stderr
    assert os.readlink(prefix / "current") == before
    # an added file is refused too, even with every listed file intact
    extra = rewrite(a.path, tmp_path / "extra.tar.gz", {"wheels/evil-1.0-py3-none-any.whl": b"PK"})
    proc = install(extract(extra, tmp_path / "extra"), prefix)
    assert proc.returncode == 3 and "not in SHA256SUMS" in proc.stderr and "evil" in proc.stderr


def test_bundle_for_another_cpu_is_refused_before_anything_is_written(make_bundle, tmp_path: Path) -> None:
    arm = make_bundle("aarch64")
    prefix = tmp_path / "p"
    proc = install(extract(arm.path, tmp_path / "arm"), prefix)
    assert proc.returncode == 4
    assert "for aarch64 with Python 3.11, the target is x86_64" in proc.stderr
    assert "edge-flash bundle --arch x86_64" in proc.stderr
    assert not (prefix / "releases").exists() or not any((prefix / "releases").iterdir())


def test_rollback_without_a_previous_release_says_so(make_bundle, tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    assert install(extract(make_bundle("x86_64").path, tmp_path / "a"), prefix).returncode == 0
    proc = sh(
        "bash",
        prefix / "current" / "install.sh",
        "--rollback",
        "--prefix",
        prefix,
        "--no-systemd",
        check=False,
    )
    assert proc.returncode == 5 and "no previous release" in proc.stderr


def test_release_failing_its_self_check_never_becomes_current(
    make_bundle, tmp_path: Path, coral: Path, monkeypatch
) -> None:
    """A config only the device can judge (here: one the host check was bypassed for) stops the switch."""
    from edge.flash import bundle as bundle_mod

    a = make_bundle("x86_64")
    prefix = tmp_path / "p"
    assert install(extract(a.path, tmp_path / "a"), prefix).returncode == 0
    bad_cfg = tmp_path / "agent.toml"
    bad_cfg.write_text("[postprocess]\ntop_k = 0\n")
    monkeypatch.setattr(bundle_mod, "_check_agent_config", lambda text: None)
    bad = bundle_mod.build(
        [coral / MOBILENET], tmp_path / "bad.tar.gz", arch="x86_64", config=bad_cfg, log=lambda m: None
    )
    proc = install(extract(bad.path, tmp_path / "b"), prefix)
    assert proc.returncode == 6, proc.stderr
    assert "failed its self-check" in proc.stderr and "postprocess.top_k" in proc.stderr
    assert os.readlink(prefix / "current") == f"releases/{a.manifest.bundle_id}"
    assert not (prefix / "releases" / bad.manifest.bundle_id).exists()  # the half-made release is gone
