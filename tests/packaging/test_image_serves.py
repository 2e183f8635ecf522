"""The runtime image built from runtime/Dockerfile.cpu (cluster/images.py) really serves.

The archive containerd imports is unpacked layer by layer and run by runc the way a restricted
pod runs it: the image's own user, entry point and environment, a read-only root file system
with a tmpfs at /tmp (the operator's emptyDir), no capabilities, no new privileges. It must
become ready on the bundled demo model and transcribe examples/audio/sample.wav through its
HTTP API exactly as the runtime does in-process. It shares the host's loopback (no network
namespace) so the test reaches it on a free port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from kube_cluster import eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "audio" / "sample.wav"
sys.path.insert(0, str(ROOT / "cluster"))
import images  # noqa: E402

pytestmark = pytest.mark.xdist_group("images")


@dataclass(frozen=True)
class Unpacked:
    rootfs: Path
    config: dict[str, object]  # the image's config (User, Env, Entrypoint, Cmd, ...)


def unpack(archive: Path, into: Path) -> Unpacked:
    """A docker-archive's layers applied in order, whiteouts honoured, as containerd would."""
    with tarfile.open(archive) as outer:
        (manifest,) = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(outer.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        rootfs = into / "rootfs"
        rootfs.mkdir()
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as tar:
                names = tar.getnames()
            for name in names:
                path = Path(name)
                if path.name == ".wh..wh..opq":
                    for child in (rootfs / path.parent).glob("*"):
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                elif path.name.startswith(".wh."):
                    gone = rootfs / path.parent / path.name[len(".wh.") :]
                    shutil.rmtree(gone) if gone.is_dir() else gone.unlink(missing_ok=True)
            outer.extract(layer, into / "layers", set_attrs=False)
            subprocess.run(
                ["tar", "-xpf", str(into / "layers" / layer), "-C", str(rootfs),
                 "--numeric-owner", "--exclude=*/.wh.*", "--exclude=.wh.*"],
                check=True,
            )  # fmt: skip
            (into / "layers" / layer).unlink()
    return Unpacked(rootfs, config["config"])


def runc_config(image: Unpacked, port: int) -> dict[str, object]:
    """runc's default spec with the image's process, hardened like a restricted pod."""
    done = subprocess.run(
        ["runc", "spec", "--bundle", str(image.rootfs.parent)], check=True, capture_output=True
    )
    assert done.returncode == 0
    spec_path = image.rootfs.parent / "config.json"
    spec = json.loads(spec_path.read_text())
    uid, gid = (int(part) for part in str(image.config["User"]).split(":"))
    env = [e for e in image.config["Env"] if not e.startswith("KUBESCRIBE_PORT=")]  # type: ignore[attr-defined]
    spec["process"].update(
        terminal=False,
        user={"uid": uid, "gid": gid},
        args=[*image.config["Entrypoint"], *image.config["Cmd"]],  # type: ignore[misc]
        env=[*env, f"KUBESCRIBE_PORT={port}", "KUBESCRIBE_HOST=127.0.0.1"],
        cwd=image.config.get("WorkingDir") or "/",
        capabilities={},
        noNewPrivileges=True,
    )
    spec["root"] = {"path": "rootfs", "readonly": True}
    spec["mounts"].append(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "size=256m"]}
    )  # fmt: skip
    namespaces = spec["linux"]["namespaces"]
    spec["linux"]["namespaces"] = [ns for ns in namespaces if ns["type"] != "network"]
    return spec


@dataclass
class Container:
    id: str
    url: str
    log: Path

    def runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runc", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def built() -> images.Images:
    return images.ensure_images()


@pytest.fixture(scope="module")
def runtime_container(
    built: images.Images, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    (archive,) = [a for a in built.archives if a.name.startswith("runtime-cpu-")]
    bundle = tmp_path_factory.mktemp("runtime-bundle")
    image = unpack(archive, bundle)
    port = free_port()
    (bundle / "config.json").write_text(json.dumps(runc_config(image, port)))
    container = Container(f"kubescribe-test-{uuid.uuid4().hex[:8]}", f"http://127.0.0.1:{port}",
                          bundle / "container.log")  # fmt: skip
    with container.log.open("w") as log:
        # --detach: runc returns once the process runs; its output goes to the log.
        subprocess.run(
            ["runc", "run", "--detach", "--bundle", str(bundle), container.id],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
        )  # fmt: skip
    try:
        yield container
    finally:
        container.runc("kill", container.id, "KILL")
        container.runc("delete", "--force", container.id)
        shutil.rmtree(bundle, ignore_errors=True)


def ready(container: Container) -> bool:
    state = json.loads(container.runc("state", container.id).stdout or "{}")
    assert state.get("status") == "running", container.log.read_text()[-3000:]
    try:
        return requests.get(f"{container.url}/readyz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_archive_names_the_images_the_operator_and_chart_use(built: images.Images) -> None:
    named = {}
    for archive in built.archives:
        with tarfile.open(archive) as tar:
            (manifest,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            named[archive.name.rsplit("-", 1)[0]] = manifest["RepoTags"]
    assert named == {
        "runtime-cpu": [built.runtime_cpu],
        "operator": [built.operator],
        "pause": [built.pause],
    }
    assert built.runtime_cpu == "ghcr.io/kubescribe/runtime-cpu:0.1.0"


def test_runtime_image_serves_sample_as_uid_10001_on_a_read_only_root(
    runtime_container: Container,
) -> None:
    from kubescribe_runtime.config import DEMO_MODEL_DIR, ServeConfig
    from kubescribe_runtime.service import build_transcriber

    eventually(lambda: ready(runtime_container), "the image's runtime ready", timeout=300)
    with SAMPLE.open("rb") as audio:
        answer = requests.post(
            f"{runtime_container.url}/v1/audio/transcriptions",
            files={"file": ("sample.wav", audio, "audio/wav")},
            data={"model": "demo"},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    transcriber = build_transcriber(ServeConfig(model_dir=DEMO_MODEL_DIR, max_batch_size=1))
    try:
        expected = transcriber.transcribe(SAMPLE.read_bytes()).text
    finally:
        transcriber.batcher.close()
    print(f"\nimage transcript: {answer.json()['text']!r}")
    assert answer.json()["text"] == expected

    # The server runs as the image's user, and nothing outside /tmp is writable.
    state = json.loads(runtime_container.runc("state", runtime_container.id).stdout)
    status = Path(f"/proc/{state['pid']}/status").read_text()
    assert "\nUid:\t10001\t10001\t10001\t10001\n" in status, status
    for path in ("/opt/kubescribe/x", "/x", "/tmp/x"):
        wrote = runtime_container.runc("exec", runtime_container.id, "python", "-c",
                                       f"open({path!r}, 'w')")  # fmt: skip
        assert (wrote.returncode == 0) == (path == "/tmp/x"), (path, wrote.stderr)
