"""The runtime runs as a non-root user and writes nowhere but its scratch directory (an emptyDir
in the pod, where uploads above --spool-threshold-mb are spooled): every file-system write of the
real server process (recorded by strace) is checked while it loads, warms up and serves uploads."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from rt_fixtures import TONE_TOKENS, encode, tone_sentence, write_artifact
from rt_server import start_server

pytestmark = pytest.mark.xdist_group("runtime-server")

NOBODY = 65534
# Opening these for writing is not a write to the file system.
ALLOWED = ("/dev/null", "/dev/shm/", "/dev/tty", "/dev/urandom")
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT")


@pytest.fixture
def public_model() -> Iterator[Path]:
    """The artifact in a directory the unprivileged user can read (pytest's tmp is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="kubescribe-nonroot-"))
    directory = write_artifact(root / "tone", TONE_TOKENS)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield directory
    shutil.rmtree(root)


def _writes(trace: str, allowed: tuple[str, ...] = ALLOWED) -> list[str]:
    found = []
    for line in trace.splitlines():
        call = re.search(
            r"(openat|creat|mkdir|mkdirat|rename|renameat2?|unlink|unlinkat)\((.*)", line
        )
        if not call or re.search(r"= -1 ", line):
            continue
        name, args = call.groups()
        path = re.search(r'"([^"]*)"', args)
        target = path.group(1) if path else "?"
        if name.startswith("open") and not any(flag in args for flag in WRITE_FLAGS):
            continue
        if target.startswith(allowed):
            continue
        found.append(f"{name} {target}")
    return found


def test_write_detection() -> None:
    trace = (
        '7 openat(AT_FDCWD, "/tmp/x", O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3\n'
        '7 openat(AT_FDCWD, "/m/model.onnx", O_RDONLY|O_CLOEXEC) = 4\n'
        '7 openat(AT_FDCWD, "/dev/null", O_WRONLY) = 5\n'
        '7 mkdir("/nonexistent/.cache", 0777) = -1 ENOENT (No such file or directory)\n'
    )
    assert _writes(trace) == ["openat /tmp/x"]


# (uid, gid, supplementary groups): nobody; and a UID from no passwd file with group 0, as
# OpenShift's restricted-v2 SCC runs a pod (spec.pod.fixedUser false: the platform picks the UID
# from the namespace's range, the primary group is root's, the fsGroup a supplementary one).
USERS = {
    "nobody": (NOBODY, NOBODY, ()),
    "openshift-arbitrary-uid": (1000680000, 0, (1000680000,)),
}


@pytest.mark.parametrize("user", USERS.values(), ids=USERS.keys())
def test_serves_as_an_unprivileged_user_and_writes_nothing(
    public_model: Path, tmp_path: Path, user: tuple[int, int, tuple[int, ...]]
) -> None:
    uid, gid, groups = user
    if os.geteuid() != 0:
        user_args: tuple[str, ...] = ()  # already unprivileged
    else:
        # The user may read and search (never write) wherever the checkout lies: CI's clone can
        # sit under a 0700 directory (mktemp -d) that it could not otherwise traverse.
        group_args = (f"--groups={','.join(map(str, groups))}",) if groups else ("--clear-groups",)
        user_args = (
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            *group_args,
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
        )
    trace = tmp_path / "trace.log"
    scratch = Path(tempfile.mkdtemp(prefix="kubescribe-scratch-"))
    scratch.chmod(0o1777)  # an emptyDir the runtime user may write
    server = start_server(
        public_model,
        tmp_path,
        "--scratch-dir",
        str(scratch),
        env={"HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": "/nonexistent"},
        wrapper=("strace", "-f", "-qq", "-e", "trace=%file", "-o", str(trace), *user_args),
    )
    try:
        python_pid = int(
            Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
            .read_text()
            .split()[0]
        )
        status = Path(f"/proc/{python_pid}/status").read_text()
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
        assert uid != 0 and (not user_args or uid == user[0])
        # A 3 MB upload: above the 1 MB spool threshold, so it goes to the scratch directory.
        rng = np.random.default_rng(0)
        speech = tone_sentence("lo hi lo hi")
        long = np.concatenate([speech, 1e-3 * rng.standard_normal(16000 * 90).astype(np.float32)])
        data = encode(np.concatenate([long, speech]), subtype="PCM_16")
        assert len(data) > 3_000_000
        answer = requests.post(
            server.url + "/v1/audio/transcriptions",
            files={"file": ("a.wav", data, "audio/wav")},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"].startswith("low high low high")
        os.kill(python_pid, signal.SIGTERM)
        assert server.process.wait(60) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
    recorded = trace.read_text()
    assert str(public_model / "model.onnx") in recorded  # the trace saw the process's files
    writes = _writes(recorded, (*ALLOWED, str(scratch)))  # O_TMPFILE opens the directory
    assert writes == [], writes
    assert any(str(scratch) in line for line in recorded.splitlines())  # the upload was spooled
    assert list(scratch.iterdir()) == []  # and nothing is left behind
    scratch.rmdir()
    assert stat.S_IMODE(public_model.stat().st_mode) == 0o755  # untouched


@pytest.mark.parametrize("user", USERS.values(), ids=USERS.keys())
def test_fetch_runs_as_an_unprivileged_user(
    public_model: Path, user: tuple[int, int, tuple[int, ...]]
) -> None:
    # The init container: `kubescribe fetch` into the artifact emptyDir (world-writable, as the
    # kubelet makes it) as the pod's user, whatever UID the platform assigned.
    uid, gid, groups = user
    volume = Path(tempfile.mkdtemp(prefix="kubescribe-artifact-"))
    volume.chmod(0o1777)
    dest = volume / "model"
    user_args: tuple[str, ...] = ()
    if os.geteuid() == 0:
        group_args = (f"--groups={','.join(map(str, groups))}",) if groups else ("--clear-groups",)
        user_args = (
            "setpriv", f"--reuid={uid}", f"--regid={gid}", *group_args,
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
        )  # fmt: skip
    env = {**os.environ, "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "kubescribe.cli", "fetch", f"file://{public_model}", str(dest)]
    try:
        out = subprocess.run(
            [*user_args, *command], capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert (dest / "model.onnx").is_file() and (dest / "kubescribe.yaml").is_file()
        if user_args:
            assert dest.stat().st_uid == uid
    finally:
        shutil.rmtree(volume)
