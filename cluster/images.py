"""The images the real node runs, built from this repository with no registry and no daemon.

No registry is reachable, so nothing is pulled: a Python base is made from Debian's packages
(mmdebstrap: bookworm's python3 3.11, python3-venv, python-is-python3, ca-certificates) and
stands in for the Dockerfiles' ``PYTHON_IMAGE``; ``runtime/Dockerfile.cpu`` and
``operator/Dockerfile`` themselves are then built by buildah (Debian's, chroot isolation, its own
storage under the cache), and a pause image holds Debian's static ``catatonit -P``. Each image is
exported as a docker-archive tarball, which containerd 1.6 imports under its name
(``ctr -n k8s.io images import``).

Everything is cached under ``~/.cache/kubescribe/images`` (``$KUBESCRIBE_IMAGE_CACHE``), keyed
by a hash of what goes in: the base recipe, the Dockerfile, the files its COPY steps read (lock
files included) and the build arguments. A warm call only hashes; a source change rebuilds only
the images that copy it, and buildah's layer cache keeps their dependency layer.

    python3 cluster/images.py build    # build or reuse; prints the archive paths

Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "KUBESCRIBE_IMAGE_CACHE"
# Bump when a step below changes meaning without changing its inputs.
RECIPE = "1"
SUITE = "bookworm"
MIRRORS = (
    "http://deb.debian.org/debian",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
# What the Dockerfiles' steps use from python:3.11-slim: python (venv with pip), groupadd and
# useradd (passwd, in minbase), CA certificates for an https:// artifact source.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
BASE_NAME = "localhost/kubescribe/python"
BASE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PAUSE_NAME = "localhost/kubescribe/pause"
CACHE_NAME = "localhost/kubescribe/build-stage"
CATATONIT = Path("/usr/bin/catatonit")
# Where the host's CA bundle is; mounted into RUN steps only (never committed) so that pip
# reaches PyPI behind a TLS-intercepting proxy.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap", "catatonit": "catatonit"}
IGNORED_PARTS = ("__pycache__", ".egg-info", ".pyc")


class ImageError(RuntimeError):
    """An image could not be built; the message says which step and why."""


@dataclass(frozen=True)
class Images:
    archives: list[Path]  # docker-archive tarballs, each naming its image
    pause: str  # containerd's sandbox_image
    runtime_cpu: str  # the operator's DEFAULT_CPU_IMAGE
    operator: str  # the chart's default operator image


@dataclass(frozen=True)
class Recipe:
    """One image built from one of the repository's Dockerfiles."""

    short: str
    dockerfile: Path
    name: str


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kubescribe" / "images")


# ------------------------------------------------------------------ names the repository uses


def runtime_cpu_name() -> str:
    text = (ROOT / "operator" / "kubescribe_operator" / "runtime_spec.py").read_text()
    found = re.search(r'^DEFAULT_CPU_IMAGE = "([^"]+)"', text, re.MULTILINE)
    if not found:
        raise ImageError("DEFAULT_CPU_IMAGE not found in runtime_spec.py")
    return found.group(1)


def operator_name() -> str:
    chart = (ROOT / "charts" / "kubescribe" / "Chart.yaml").read_text()
    values = (ROOT / "charts" / "kubescribe" / "values.yaml").read_text()
    version = re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.MULTILINE)
    image = values.partition("\nimage:")[2]
    repository = re.search(r"^\s+repository:\s*(\S+)", image, re.MULTILINE)
    if not version or not repository:
        raise ImageError("the chart's image repository or appVersion not found")
    return f"{repository.group(1)}:{version.group(1)}"


def recipes() -> list[Recipe]:
    return [
        Recipe("runtime-cpu", ROOT / "runtime" / "Dockerfile.cpu", runtime_cpu_name()),
        Recipe("operator", ROOT / "operator" / "Dockerfile", operator_name()),
    ]


# ------------------------------------------------------------------------------ cache keys


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile's COPY steps read (not those --from a stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) > 2 and words[0].upper() == "COPY" and not words[1].startswith("--from"):
            sources += [word for word in words[1:-1] if not word.startswith("--")]
    return sources


def context_files(sources: Sequence[str]) -> Iterator[Path]:
    for source in sources:
        path = ROOT / source
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in found:
            relative = file.relative_to(ROOT).as_posix()
            if file.is_file() and not any(part in relative for part in IGNORED_PARTS):
                yield file


def digest(*parts: object, files: Sequence[Path] = ()) -> str:
    hasher = hashlib.sha256(json.dumps([RECIPE, *parts], default=str).encode())
    for file in files:
        hasher.update(file.relative_to(ROOT).as_posix().encode() + b"\0")
        hasher.update(hashlib.sha256(file.read_bytes()).digest())
    return hasher.hexdigest()[:16]


def base_key() -> str:
    return digest(SUITE, MIRRORS, BASE_PACKAGES, BASE_EXCLUDES)


def image_key(recipe: Recipe, base: str) -> str:
    dockerignore = ROOT / ".dockerignore"
    files = [recipe.dockerfile, dockerignore, *context_files(copied_sources(recipe.dockerfile))]
    return digest(recipe.name, base, files=files)


def package_version(package: str) -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


# ---------------------------------------------------------------------------------- builders


class Buildah:
    """buildah with its own storage under the cache (no daemon, nothing system-wide)."""

    def __init__(self, cache: Path) -> None:
        driver = os.environ.get("KUBESCRIBE_IMAGE_STORAGE_DRIVER", "overlay")
        self.base = [
            "buildah", "--root", str(cache / "storage"), "--runroot", str(cache / "run"),
            "--storage-driver", driver,
        ]  # fmt: skip

    def run(self, *args: str, stream: bool = False) -> str:
        """Run a buildah command; with ``stream`` its output goes to stderr as progress."""
        done = subprocess.run(
            [*self.base, *args],
            stdout=sys.stderr if stream else subprocess.PIPE,
            stderr=sys.stderr if stream else subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            tail = "" if stream else (done.stderr or "").strip()[-2000:]
            raise ImageError(f"buildah {args[0]} failed (exit {done.returncode}) {tail}")
        return (done.stdout or "").strip() if not stream else ""

    def exists(self, name: str) -> bool:
        done = subprocess.run(
            [*self.base, "inspect", "--type", "image", name], capture_output=True, text=True
        )
        return done.returncode == 0

    def export(self, name: str, archive: Path) -> None:
        """Write ``name`` as a docker-archive that keeps its name (what ctr import reads)."""
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self.run("push", "--quiet", name, f"docker-archive:{partial}:{name}")
        partial.rename(archive)


def build_base(buildah: Buildah, name: str) -> None:
    """Debian's python3 as a root file system (mmdebstrap) committed as an image."""
    log(f"{name}: mmdebstrap {SUITE} + {', '.join(BASE_PACKAGES)} (about 2 minutes)")
    with tempfile.TemporaryDirectory(prefix="kubescribe-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        excludes = [f"--dpkgopt=path-exclude={path}" for path in BASE_EXCLUDES]
        done = subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
             *excludes, SUITE, str(tarball), *MIRRORS],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise ImageError(f"mmdebstrap failed: {done.stderr.strip()[-2000:]}")
        container = buildah.run("from", "scratch")
        try:
            buildah.run("add", container, str(tarball), "/")
            buildah.run(
                "config", "--env", BASE_PATH,
                "--env", "LANG=C.UTF-8", "--cmd", '["python3"]', container,
            )  # fmt: skip
            buildah.run("commit", "--quiet", container, name)
        finally:
            subprocess.run([*buildah.base, "rm", container], capture_output=True)


def build_dockerfile(buildah: Buildah, recipe: Recipe, base: str) -> None:
    """The repository's Dockerfile itself, with the Debian base as its PYTHON_IMAGE."""
    log(f"{recipe.name}: buildah bud -f {recipe.dockerfile.relative_to(ROOT)}")
    volumes = ["--volume", f"{HOST_CA}:{HOST_CA}:ro"] if HOST_CA.is_file() else []
    bud = [
        "bud", "--isolation", "chroot", "--layers", "--pull=never", "--network", "host",
        *volumes, "--build-arg", f"PYTHON_IMAGE={base}", "-f", str(recipe.dockerfile),
    ]  # fmt: skip
    # The build stage first, under a name: its layers (the locked dependencies among them)
    # then have a named child and survive the prune of replaced images below.
    buildah.run(*bud, "--target", "build", "-t", f"{CACHE_NAME}/{recipe.short}", str(ROOT),
                stream=True)  # fmt: skip
    buildah.run(*bud, "-t", recipe.name, str(ROOT), stream=True)


def build_pause(buildah: Buildah, name: str) -> None:
    """The pod sandbox: Debian's static catatonit in pause mode, alone on an empty image."""
    log(f"{name}: catatonit -P from Debian's catatonit")
    container = buildah.run("from", "scratch")
    try:
        buildah.run("copy", container, str(CATATONIT), "/catatonit")
        buildah.run(
            "config", "--entrypoint", '["/catatonit", "-P"]', "--user", "65535:65535",
            container,
        )  # fmt: skip
        buildah.run("commit", "--quiet", container, name)
    finally:
        subprocess.run([*buildah.base, "rm", container], capture_output=True)


# ------------------------------------------------------------------------------------ the edge


def missing_tools() -> list[str]:
    return [package for tool, package in TOOLS.items() if shutil.which(tool) is None]


@contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One build at a time per cache (parallel test workers share it)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cached_archive(cache: Path, short: str, key: str, name: str, build: Callable[[], None]) -> Path:
    """The archive of one image, built (by ``build()``) and exported only when missing."""
    archive = cache / f"{short}-{key}.tar"
    if archive.is_file():
        log(f"{name}: cached ({archive.name})")
        return archive
    started = time.monotonic()
    build()
    buildah = Buildah(cache)
    buildah.export(name, archive)
    for stale in cache.glob(f"{short}-*.tar"):
        if stale != archive:
            stale.unlink()
    # The images this one replaced (now untagged) would keep hundreds of MB each.
    buildah.run("rmi", "--prune")
    log(f"{name}: built in {time.monotonic() - started:.0f} s -> {archive}")
    return archive


def ensure_images() -> Images:
    """Build what changed, reuse the rest; progress on stderr."""
    missing = missing_tools()
    if missing:
        raise ImageError(f"missing {', '.join(missing)}: run `make image-tools` (apt, as root)")
    cache = cache_dir()
    with locked(cache):
        buildah = Buildah(cache)
        started = time.monotonic()
        base = f"{BASE_NAME}:3.11-{SUITE}-{base_key()}"
        if not buildah.exists(base):
            build_base(buildah, base)
        archives = []
        for recipe in recipes():
            key = image_key(recipe, base)
            build = partial(build_dockerfile, buildah, recipe, base)
            archives.append(cached_archive(cache, recipe.short, key, recipe.name, build))
        # A tag allows [A-Za-z0-9_.-]: Debian's "0.1.7-1+b2" becomes "0.1.7-1-b2".
        version = re.sub(r"[^\w.-]", "-", package_version("catatonit"))
        pause = f"{PAUSE_NAME}:catatonit-{version}"
        pause_key = digest(pause, files=[])
        archives.append(
            cached_archive(cache, "pause", pause_key, pause, partial(build_pause, buildah, pause))
        )
        log(f"ready in {time.monotonic() - started:.0f} s")
    return Images(archives, pause, runtime_cpu_name(), operator_name())


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["build"]:
        print("usage: python3 cluster/images.py build", file=sys.stderr)
        return 2
    try:
        images = ensure_images()
    except ImageError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    print("\n".join(str(archive) for archive in images.archives))
    return 0


if __name__ == "__main__":
    sys.exit(main())
