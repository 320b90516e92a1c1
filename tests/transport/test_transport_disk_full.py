"""A full disk under the spool: acks still delete, no seq is given twice, and it recovers by itself.

The disk is a real 1 MB tmpfs, mounted in a private mount namespace (``unshare``: as root directly,
otherwise as an unprivileged user namespace, else through ``sudo -n``), so nothing outside the test
sees it and it vanishes with the child process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.broker import Mosquitto
from tests.support.process import subprocess_env

CHILD = Path(__file__).with_name("disk_full_child.py")
NO_MOUNT = 97  # exit status of the wrapper when it could not mount (then the next way is tried)
MOUNT_AND_RUN = f'mount -t tmpfs -o size=1m tmpfs "$1" || exit {NO_MOUNT}; shift; exec "$@"'


def _in_small_tmpfs(disk: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to mount a private tmpfs"
    script = ["sh", "-c", MOUNT_AND_RUN, "sh", str(disk), *argv]
    env = subprocess_env()
    ways = [[unshare, "--mount", *script]] if os.geteuid() == 0 else []
    ways.append([unshare, "--user", "--map-root-user", "--mount", *script])
    ways.append(["sudo", "-n", unshare, "--mount", "env", f"PYTHONPATH={env['PYTHONPATH']}", *script])
    tried = []
    for cmd in ways:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        if proc.returncode == 0 or (proc.returncode != NO_MOUNT and "Traceback" in proc.stderr):
            return proc  # the child ran (and passed or failed on its own)
        tried.append(f"{' '.join(cmd[:4])}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    raise AssertionError("cannot mount a private 1 MB tmpfs for the disk-full test:\n" + "\n".join(tried))


def test_full_disk_spool_recovers_by_itself(mosquitto: Mosquitto, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = _in_small_tmpfs(disk, sys.executable, str(CHILD), str(disk), mosquitto.url)
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts["reserve_made"] == 256 * 1024
    assert facts["failed_while_full"] == 10, facts  # every write on the full disk was refused ...
    assert facts["drained_while_full"], "acknowledged messages could not be deleted on the full disk"
    assert facts["reserve_given_up"]
    assert facts["still_failing"], "new messages must wait for space while the reserve is gone"
    assert facts["drained_after"] and facts["reserve_back"], facts
    # ... and none of them burnt or duplicated a number: inputs 0..29 hold seq 1..30, each once.
    assert facts["stopped_wait_raised"] and facts["waiting_while_full"]
    seqs = {int(k): v for k, v in facts["seqs"].items()}
    # The waiting send got in once space returned, between the retried inputs: numbers 1..31, each once.
    assert sorted([*seqs.values(), facts["waited_seq"]]) == list(range(1, 32)), (seqs, facts["waited_seq"])
    assert [seqs[i] for i in sorted(seqs)] == sorted(seqs.values()), "inputs numbered in the order spooled"
    assert facts["restart"] == {"depth": 5, "quarantined": False, "put_refused": True, "drained": True}
    assert facts["again"] == [seqs[5], seqs[25], 0], "an input handled again must keep its first seq"
