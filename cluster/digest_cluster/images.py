"""Container images of the local cluster, built from Debian packages and the repo, with no external registry.

Interface (all builds are cached; a warm call only asks the registry and returns in milliseconds):

- ``ImageStore(cache, registry)``: ``cache`` holds buildah's private storage, the mmdebstrap rootfs, OCI layouts and
  the logs of every step (``cache/logs/<step>.log``); ``registry`` is a running plain-HTTP ``docker-registry`` without
  auth, e.g. ``"127.0.0.1:5000"``.
- ``pause_image(store, pause_binary) -> "<registry>/pause:3.10"``: the static pause binary as ``/pause``, user 65535
  (a tag, because containerd's sandbox-image setting wants one).
- ``python_image(store, extra_ca_pem=None) -> "<registry>/python@sha256:…"``: a stand-in for ``python:3.11-slim``:
  mmdebstrap minbase bookworm (python3, python3-venv, ca-certificates) → umoci → ``python3 -m venv /usr/local``, with
  ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE`` on the system bundle; ``extra_ca_pem`` joins the system trust.
- ``project_image(store, name, dockerfile, context, python_ref) -> "<registry>/<name>@sha256:…"``: ``buildah bud
  --pull=never --build-arg PYTHON_IMAGE=<python_ref>``, tagged ``ctx-<hash16>`` of its real inputs (the Dockerfile,
  ``python_ref`` and the working-tree content of what the Dockerfile COPYs); ``smoke`` (``digestctl --help``) must
  run in it and its config must say user 10001 / entrypoint ``digestctl``.
- ``derived_image(store, ref, repo, labels=…, entrypoint=…) -> "<registry>/<repo>@sha256:…"``: ``ref`` with only
  its config changed (a second release of the same content, or one that fails at once).
- ``run_in_image(store, ref, argv) -> str``: run a command in an image with ``buildah run`` (no container runtime).
- ``ImageBuildError``: a failed step, naming the command, its exit code and the tail of its log.

A build is pushed to ``pending-<tag>`` and tagged ``<tag>`` only after its checks pass, so a warm call never returns
an image that failed them. ``python -m digest_cluster.images --registry … --pause-binary …`` builds and checks all
four images (the integration check). Nothing resolves to Docker Hub: every build uses ``--pull=never`` and local or
fully qualified references, and the tools' registries.conf lists no search registries. Progress lines with timings
go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ImageBuildError",
    "ImageStore",
    "derived_image",
    "pause_image",
    "project_image",
    "python_image",
    "run_in_image",
]

# Bump when a recipe below changes in a way the cache keys do not see: RECIPE rebuilds the images, ROOTFS_RECIPE
# also the mmdebstrap rootfs (tens of seconds).
RECIPE = "images-v1"
ROOTFS_RECIPE = "images-v1"
PAUSE_TAG = "3.10"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
LOCAL_CA_NAME = "digest-local-ca.crt"
PYTHON_ENV = {
    "SSL_CERT_FILE": IMAGE_CA_BUNDLE,
    "REQUESTS_CA_BUNDLE": IMAGE_CA_BUNDLE,
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
}
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DPKG_OPTS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'
_TAIL_LINES = 40


class ImageBuildError(RuntimeError):
    """A build step failed: the message names the command, its exit code and the tail of its log."""

    def __init__(self, message: str, *, argv: Sequence[str] = (), returncode: int | None = None,
                 log: Path | None = None) -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.log = log


@dataclass(frozen=True)
class ImageStore:
    """Where images are built (``cache``) and published (``registry``, plain HTTP, no auth)."""

    cache: Path
    registry: str

    @property
    def buildah_root(self) -> Path:
        return self.cache / "buildah" / "root"

    @property
    def buildah_runroot(self) -> Path:
        return self.cache / "buildah" / "runroot"

    @property
    def logs(self) -> Path:
        return self.cache / "logs"

    @property
    def registries_conf(self) -> Path:
        return self.cache / "registries.conf"

    @property
    def policy(self) -> Path:
        return self.cache / "policy.json"


def default_cache() -> Path:
    """``$DIGEST_CLUSTER_CACHE/images``, else ``~/.cache/digest-pipelines/cluster/images`` (as cluster/build.sh)."""
    root = os.environ.get("DIGEST_CLUSTER_CACHE")
    if root:
        return Path(root) / "images"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "digest-pipelines" / "cluster" / "images"


# --- pure helpers ---------------------------------------------------------------------------------------------------


def registries_conf(registry: str) -> str:
    """registries.conf for buildah/skopeo: no search registries (no short name becomes docker.io); ours insecure."""
    return f'unqualified-search-registries = []\n\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n'


def sha256_hex(*parts: bytes | str) -> str:
    """SHA-256 over length-prefixed parts (so part boundaries count)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def _instructions(dockerfile_text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, with line continuations joined and comments dropped."""
    logical = ""
    for raw in dockerfile_text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.partition(" ")
        yield word.upper(), rest.strip()
        logical = ""
    if logical:
        word, _, rest = logical.partition(" ")
        yield word.upper(), rest.strip()


def copied_paths(dockerfile_text: str) -> list[str]:
    """Context paths that the Dockerfile's COPY/ADD instructions read (``COPY --from=…`` reads a stage, not the
    context), in order, without duplicates."""
    out: list[str] = []
    for word, rest in _instructions(dockerfile_text):
        if word not in ("COPY", "ADD"):
            continue
        if rest.startswith("["):
            args = [str(a) for a in json.loads(rest)]
            flags: list[str] = []
        else:
            tokens = shlex.split(rest)
            flags = [t for t in tokens if t.startswith("--")]
            args = [t for t in tokens if not t.startswith("--")]
        if any(f.startswith("--from") for f in flags) or len(args) < 2:
            continue
        for src in args[:-1]:
            norm = os.path.normpath(src).lstrip("/") or "."
            if norm not in out:
                out.append(norm)
    return out


def _skip(rel: str) -> bool:
    parts = rel.split("/")
    return "__pycache__" in parts or rel.endswith((".pyc", ".pyo"))


def context_files(context: Path, paths: Sequence[str]) -> list[str]:
    """Files under ``paths`` in ``context`` that a build copies: tracked or untracked-but-not-ignored files (git),
    present in the working tree, without ``__pycache__``; sorted, relative. Outside a git work tree: every file."""
    if not paths:
        return []
    try:
        listed = subprocess.run(
            ["git", "-C", str(context), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
             *paths],
            check=True, capture_output=True,
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = []
        for p in paths:
            top = context / p
            if top.is_file():
                listed.append(p)
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                listed += [os.path.relpath(os.path.join(dirpath, f), context) for f in filenames]
    return sorted({rel for rel in listed if rel and not _skip(rel) and (context / rel).is_file()})


def content_key(dockerfile: Path, context: Path, python_ref: str) -> str:
    """Hash of a project image's real inputs: the Dockerfile, the base reference and the working-tree content (and
    executable bit) of every file its COPY instructions read."""
    text = dockerfile.read_bytes()
    parts: list[bytes | str] = [RECIPE, text, python_ref]
    for rel in context_files(context, copied_paths(text.decode())):
        path = context / rel
        parts += [rel, "x" if os.access(path, os.X_OK) else "-", hashlib.sha256(path.read_bytes()).digest()]
    return sha256_hex(*parts)


def buildah_argv(store: ImageStore, *args: str) -> list[str]:
    """A buildah command on the store's private overlay storage."""
    return ["buildah", "--root", str(store.buildah_root), "--runroot", str(store.buildah_runroot),
            "--storage-driver", "overlay", *args]


def bud_argv(store: ImageStore, dockerfile: Path, context: Path, tag: str, *, build_args: dict[str, str] | None = None,
             host_ca_bundle: Path | None = None, layers: bool = False, iidfile: Path | None = None) -> list[str]:
    """``buildah bud`` with chroot isolation, never pulling; ``host_ca_bundle`` is bind-mounted over the image's bundle
    during RUN only (for a TLS-intercepting proxy on the build host)."""
    args = ["bud", "--isolation", "chroot", "--pull=never", "--format", "oci", "--signature-policy", str(store.policy)]
    if layers:
        args.append("--layers")
    if iidfile is not None:
        args += ["--iidfile", str(iidfile)]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    if host_ca_bundle is not None:
        args += ["-v", f"{host_ca_bundle}:{IMAGE_CA_BUNDLE}:ro"]
    args += ["-f", str(dockerfile), "-t", tag, str(context)]
    return buildah_argv(store, *args)


def mmdebstrap_argv(out: Path) -> list[str]:
    """The rootfs of the Python base: minbase bookworm with python3, python3-venv and ca-certificates, as a tar."""
    return ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt={opt}" for opt in DPKG_OPTS), SUITE, str(out), *MIRRORS]


def rootfs_key() -> str:
    """Cache key of the mmdebstrap rootfs (its inputs)."""
    return sha256_hex(ROOTFS_RECIPE, " ".join(mmdebstrap_argv(Path("rootfs.tar"))))


def python_containerfile(base: str, *, with_ca: bool) -> str:
    """The stand-in ``python:3.11-slim``: a venv at /usr/local (python, pip; no PEP 668 block), CA env, UTF-8."""
    lines = [f"FROM {base}"]
    run = "python3 -m venv /usr/local && /usr/local/bin/python -m pip --version"
    if with_ca:
        lines.append(f"COPY {LOCAL_CA_NAME} /usr/local/share/ca-certificates/{LOCAL_CA_NAME}")
        run += " && update-ca-certificates"
    lines.append(f"RUN {run}")
    lines.append("ENV " + " ".join(f"{k}={v}" for k, v in PYTHON_ENV.items()))
    lines.append('CMD ["python3"]')
    return "\n".join(lines) + "\n"


def python_key(extra_ca_pem: bytes | None) -> str:
    """Cache key of the Python image: the rootfs inputs, the Containerfile and the extra CA."""
    return sha256_hex(RECIPE, rootfs_key(), python_containerfile("base", with_ca=extra_ca_pem is not None),
                      extra_ca_pem or b"")


def image_ref(registry: str, repo: str, digest: str) -> str:
    """``registry/repo@digest``."""
    return f"{registry}/{repo}@{digest}"


def _check_config(ref: str, config: dict[str, Any], *, user: str | None = None,
                  entrypoint: Sequence[str] | None = None, env: dict[str, str] | None = None) -> None:
    """Raise if the image config does not say what we shipped."""
    cfg = config.get("config") or {}
    problems = []
    if user is not None and str(cfg.get("User", "")).split(":")[0] != user:
        problems.append(f"User is {cfg.get('User')!r}, want {user}")
    if entrypoint is not None and list(cfg.get("Entrypoint") or []) != list(entrypoint):
        problems.append(f"Entrypoint is {cfg.get('Entrypoint')!r}, want {list(entrypoint)!r}")
    have_env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [])
    for key, value in (env or {}).items():
        if have_env.get(key) != value:
            problems.append(f"Env {key} is {have_env.get(key)!r}, want {value!r}")
    if problems:
        raise ImageBuildError(f"images: {ref}: " + "; ".join(problems))


# --- processes, registry, locking ------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def _prepare(store: ImageStore) -> None:
    for d in (store.logs, store.buildah_root, store.buildah_runroot, store.cache / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    conf = registries_conf(store.registry)
    for path, text in ((store.registries_conf, conf), (store.policy, _POLICY)):
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)


def _env(store: ImageStore) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CONTAINERS_REGISTRIES_CONF=str(store.registries_conf), BUILDAH_ISOLATION="chroot",
               TMPDIR=str(store.cache / "tmp"))
    return env


def _run(store: ImageStore, step: str, argv: Sequence[str], *, capture: bool = False) -> str:
    """Run one step, logging to ``logs/<step>.log``; returns stdout if ``capture`` (else it goes to the log)."""
    log = store.logs / f"{step}.log"
    with log.open("wb") as f:
        f.write(f"$ {shlex.join(argv)}\n".encode())
        f.flush()
        try:
            proc = subprocess.run(list(argv), stdout=subprocess.PIPE if capture else f, stderr=f,
                                  stdin=subprocess.DEVNULL, env=_env(store), check=False)
        except FileNotFoundError as e:
            raise ImageBuildError(
                f"images: {step}: {argv[0]} not found (apt-get install -y --no-install-recommends mmdebstrap umoci "
                f"skopeo buildah)", argv=argv) from e
        out = proc.stdout.decode(errors="replace") if capture else ""
        if capture:
            f.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-_TAIL_LINES:])
        raise ImageBuildError(f"images: {step}: `{shlex.join(argv)}` exited {proc.returncode}; log {log}:\n{tail}",
                              argv=argv, returncode=proc.returncode, log=log)
    return out


def _ok(store: ImageStore, argv: Sequence[str]) -> bool:
    """Whether a query command succeeds (quietly)."""
    return subprocess.run(list(argv), capture_output=True, env=_env(store), check=False).returncode == 0


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the registry is local: never a proxy


def registry_manifest(registry: str, repo: str, reference: str, *, method: str = "HEAD"
                      ) -> tuple[str, str, bytes] | None:
    """(digest, media type, body) of a manifest in the registry, or None if absent."""
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{reference}", method=method,
                                 headers={"Accept": ", ".join(_MANIFEST_TYPES)})
    try:
        with _OPENER.open(req, timeout=10) as resp:
            body = resp.read()
            digest = resp.headers.get("Docker-Content-Digest") or ""
            media = resp.headers.get("Content-Type") or ""
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise ImageBuildError(f"images: registry {registry}: {method} {repo}:{reference} → HTTP {e.code}") from e
    except OSError as e:
        raise ImageBuildError(f"images: registry {registry} unreachable ({e})") from e
    if not digest.startswith("sha256:"):
        raise ImageBuildError(f"images: registry {registry}: no Docker-Content-Digest for {repo}:{reference}")
    return digest, media, body


def registry_digest(registry: str, repo: str, reference: str) -> str | None:
    """The manifest digest the registry serves for ``repo:reference``, or None."""
    found = registry_manifest(registry, repo, reference)
    return found[0] if found else None


def registry_retag(registry: str, repo: str, src: str, dst: str) -> str:
    """Point tag ``dst`` at the manifest of ``src`` (same bytes, so the same digest); returns the digest."""
    found = registry_manifest(registry, repo, src, method="GET")
    if found is None:
        raise ImageBuildError(f"images: registry {registry}: {repo}:{src} is missing")
    digest, media, body = found
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{dst}", data=body, method="PUT",
                                 headers={"Content-Type": media})
    try:
        with _OPENER.open(req, timeout=10):
            pass
    except OSError as e:
        raise ImageBuildError(f"images: registry {registry}: PUT {repo}:{dst} failed ({e})") from e
    return digest


@contextlib.contextmanager
def _locked(store: ImageStore) -> Iterator[None]:
    """One cold build at a time per cache (pytest-xdist workers may ask together)."""
    _prepare(store)
    with (store.cache / "lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _push(store: ImageStore, step: str, local: str, dest: str) -> str:
    """``buildah push`` to ``docker://dest``; returns the manifest digest (``--digestfile``)."""
    with tempfile.TemporaryDirectory(dir=store.cache / "tmp") as tmp:
        digestfile = Path(tmp) / "digest"
        _run(store, step, buildah_argv(store, "push", "--tls-verify=false", "--signature-policy", str(store.policy),
                                       "--digestfile", str(digestfile), local, f"docker://{dest}"))
        return digestfile.read_text().strip()


def _skopeo_copy(store: ImageStore, step: str, src: str, dest: str) -> str:
    """``skopeo copy`` to a registry; returns the manifest digest."""
    with tempfile.TemporaryDirectory(dir=store.cache / "tmp") as tmp:
        digestfile = Path(tmp) / "digest"
        _run(store, step, ["skopeo", "--policy", str(store.policy), "copy", "--dest-tls-verify=false",
                           "--digestfile", str(digestfile), src, f"docker://{dest}"])
        return digestfile.read_text().strip()


def inspect_config(store: ImageStore, ref: str) -> dict[str, Any]:
    """The image config as the registry serves it (``skopeo inspect --config``)."""
    out = _run(store, "inspect", ["skopeo", "--policy", str(store.policy), "inspect", "--config",
                                  "--tls-verify=false", f"docker://{ref}"], capture=True)
    config: dict[str, Any] = json.loads(out)
    return config


def _verify_pushed(store: ImageStore, repo: str, tag: str, digest: str) -> None:
    served = registry_digest(store.registry, repo, tag)
    if served != digest:
        raise ImageBuildError(f"images: {store.registry}/{repo}:{tag} serves {served}, the push wrote {digest}")


def _publish(store: ImageStore, repo: str, tag: str, digest: str, **expect: Any) -> str:
    """After a push to ``pending-<tag>``: check the config as the registry serves it, then tag it ``tag`` (what warm
    calls look for, so a bad image is never found as cached); returns the digest reference."""
    _verify_pushed(store, repo, f"pending-{tag}", digest)
    ref = image_ref(store.registry, repo, digest)
    _check_config(ref, inspect_config(store, ref), **expect)
    registry_retag(store.registry, repo, f"pending-{tag}", tag)
    _verify_pushed(store, repo, tag, digest)
    return ref


def ensure_local(store: ImageStore, ref: str) -> None:
    """Make ``ref`` (in our registry) present in buildah's storage, for ``--pull=never`` builds and ``buildah from``."""
    if not _ok(store, buildah_argv(store, "inspect", "--type", "image", ref)):
        _run(store, "pull", buildah_argv(store, "pull", "--tls-verify=false", "--signature-policy",
                                         str(store.policy), ref))


def run_in_image(store: ImageStore, ref: str, argv: Sequence[str], *, step: str = "run") -> str:
    """Run ``argv`` in a throwaway container of ``ref`` (``buildah run``, chroot isolation, the image's user and
    env); returns its stdout (stderr goes to ``logs/<step>.log``)."""
    _prepare(store)
    ensure_local(store, ref)
    ctr = _run(store, step, buildah_argv(store, "from", "--pull=never", "--signature-policy", str(store.policy),
                                         ref), capture=True).strip().splitlines()[-1]
    try:
        return _run(store, step, buildah_argv(store, "run", "--isolation", "chroot", ctr, "--", *argv),
                    capture=True)
    finally:
        _ok(store, buildah_argv(store, "rm", ctr))


def _umoci_unpack(store: ImageStore, step: str, layout: Path, tag: str, bundle: Path) -> None:
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    _run(store, step, ["umoci", "unpack", *rootless, "--image", f"{layout}:{tag}", str(bundle)])


# --- the images ----------------------------------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def binaries_image(store: ImageStore, repo: str, binaries: Sequence[Path], *, entrypoint: str, user: str) -> str:
    """An image of static binaries only (each at ``/<name>``, an empty ``/tmp``), run as ``user``; pushed to
    ``repo`` under a tag keyed by the binaries' content. Returns ``<registry>/<repo>@sha256:…``."""
    key = sha256_hex(RECIPE, "binaries", entrypoint, user, *(f"{b.name}={_file_digest(b)}" for b in binaries))[:16]
    keyed = f"bin-{key}"
    have = registry_digest(store.registry, repo, keyed)
    if have is not None:
        return image_ref(store.registry, repo, have)
    with _locked(store):
        have = registry_digest(store.registry, repo, keyed)
        if have is not None:
            return image_ref(store.registry, repo, have)
        t0 = time.monotonic()
        step = f"{repo}-umoci"
        layout = store.cache / "oci" / f"{repo}-{key}"
        if not (layout / "index.json").exists():
            with tempfile.TemporaryDirectory(dir=store.cache / "tmp") as tmp:
                lay, bundle = Path(tmp) / "layout", Path(tmp) / "bundle"
                _run(store, step, ["umoci", "init", "--layout", str(lay)])
                _run(store, step, ["umoci", "new", "--image", f"{lay}:{repo}"])
                _umoci_unpack(store, step, lay, repo, bundle)
                for binary in binaries:
                    shutil.copyfile(binary, bundle / "rootfs" / binary.name)
                    (bundle / "rootfs" / binary.name).chmod(0o755)
                (bundle / "rootfs" / "tmp").mkdir(mode=0o1777)
                (bundle / "rootfs" / "tmp").chmod(0o1777)
                _run(store, step, ["umoci", "repack", "--image", f"{lay}:{repo}", str(bundle)])
                _run(store, step, ["umoci", "config", "--image", f"{lay}:{repo}",
                                   "--config.entrypoint", entrypoint, "--config.user", user])
                layout.parent.mkdir(parents=True, exist_ok=True)
                lay.rename(layout)
        have = _skopeo_copy(store, f"{repo}-push", f"oci:{layout}:{repo}", f"{store.registry}/{repo}:pending-{keyed}")
        ref = _publish(store, repo, keyed, have, user=user.split(":")[0], entrypoint=[entrypoint])
        _log(f"{repo} image built in {time.monotonic() - t0:.1f} s ({have})")
    return ref


def pause_image(store: ImageStore, pause_binary: Path) -> str:
    """The pause image (``/pause`` of ``pause_binary``, user 65535), pushed as ``<registry>/pause:3.10``."""
    built = binaries_image(store, "pause", [pause_binary], entrypoint="/pause", user="65535:65535")
    digest = built.split("@", 1)[1]
    if registry_digest(store.registry, "pause", PAUSE_TAG) != digest:
        with _locked(store):
            registry_retag(store.registry, "pause", digest, PAUSE_TAG)
    return f"{store.registry}/pause:{PAUSE_TAG}"


def _base_layout(store: ImageStore) -> Path:
    """The OCI layout of the Debian base (mmdebstrap rootfs → umoci), built if missing."""
    key = rootfs_key()[:16]
    layout = store.cache / "oci" / f"base-{key}"
    if (layout / "index.json").exists():
        return layout
    tar = store.cache / "rootfs" / f"{SUITE}-python3-{key}.tar"
    if not tar.exists():
        t0 = time.monotonic()
        tar.parent.mkdir(parents=True, exist_ok=True)
        part = tar.with_suffix(".part.tar")
        part.unlink(missing_ok=True)
        _run(store, "rootfs-mmdebstrap", mmdebstrap_argv(part))
        part.rename(tar)
        _log(f"rootfs (mmdebstrap) built in {time.monotonic() - t0:.1f} s, {tar.stat().st_size / 1e6:.0f} MB")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=store.cache / "tmp") as tmp:
        lay, bundle = Path(tmp) / "layout", Path(tmp) / "bundle"
        _run(store, "base-umoci", ["umoci", "init", "--layout", str(lay)])
        _run(store, "base-umoci", ["umoci", "new", "--image", f"{lay}:base"])
        _umoci_unpack(store, "base-umoci", lay, "base", bundle)
        _run(store, "base-umoci", ["tar", "-xpf", str(tar), "-C", str(bundle / "rootfs"), "--numeric-owner"])
        _run(store, "base-umoci", ["umoci", "repack", "--image", f"{lay}:base", str(bundle)])
        _run(store, "base-umoci", ["umoci", "config", "--image", f"{lay}:base",
                                   "--config.env", f"PATH={PYTHON_ENV['PATH']}", "--config.cmd", "/usr/bin/python3"])
        layout.parent.mkdir(parents=True, exist_ok=True)
        lay.rename(layout)
    _log(f"base layout (umoci) built in {time.monotonic() - t0:.1f} s")
    return layout


def python_image(store: ImageStore, extra_ca_pem: bytes | None = None) -> str:
    """The stand-in ``python:3.11-slim`` (Debian packages only), optionally trusting ``extra_ca_pem``; returns
    ``<registry>/python@sha256:…``."""
    tag = f"py311-{python_key(extra_ca_pem)[:16]}"
    have = registry_digest(store.registry, "python", tag)
    if have is not None:
        return image_ref(store.registry, "python", have)
    with _locked(store):
        have = registry_digest(store.registry, "python", tag)
        if have is not None:
            return image_ref(store.registry, "python", have)
        layout = _base_layout(store)
        t0 = time.monotonic()
        base = f"localhost/digest-base:{layout.name.removeprefix('base-')}"
        if not _ok(store, buildah_argv(store, "inspect", "--type", "image", base)):
            storage = f"containers-storage:[overlay@{store.buildah_root}+{store.buildah_runroot}]"
            _run(store, "base-import", ["skopeo", "--policy", str(store.policy), "copy", f"oci:{layout}:base",
                                        f"{storage}{base}"])
        ctx = store.cache / "python" / tag
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        (ctx / "Containerfile").write_text(python_containerfile(base, with_ca=extra_ca_pem is not None))
        if extra_ca_pem is not None:
            (ctx / LOCAL_CA_NAME).write_bytes(extra_ca_pem)
        local = f"localhost/digest-python:{tag}"
        # No host CA mount here: these RUN steps use no network, and update-ca-certificates must write the bundle.
        _run(store, "python-build", bud_argv(store, ctx / "Containerfile", ctx, local))
        if extra_ca_pem is not None:
            _check_trusts(store, local, extra_ca_pem)
        have = _push(store, "python-push", local, f"{store.registry}/python:pending-{tag}")
        ref = _publish(store, "python", tag, have, env=PYTHON_ENV)
        _log(f"python base built in {time.monotonic() - t0:.1f} s ({ref})")
        return ref


def _check_trusts(store: ImageStore, ref: str, pem: bytes) -> None:
    """Raise unless Python's default TLS context in ``ref`` trusts every certificate of ``pem``."""
    import ssl

    ders = [ssl.PEM_cert_to_DER_cert(m.group(0).decode()).hex() for m in
            re.finditer(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)]
    script = ("import ssl, sys; have = {c.hex() for c in ssl.create_default_context().get_ca_certs(True)}; "
              "missing = [d for d in sys.argv[1:] if d not in have]; print(len(have), len(missing))")
    out = run_in_image(store, ref, ["/usr/local/bin/python", "-c", script, *ders]).split()
    if not ders or out[-1] != "0":
        raise ImageBuildError(f"images: {ref} does not trust the extra CA ({out!r})")


def project_image(store: ImageStore, name: str, dockerfile: Path, context: Path, python_ref: str, *,
                  user: str | None = "10001", entrypoint: Sequence[str] | None = ("digestctl",),
                  smoke: Sequence[str] | None = ("digestctl", "--help")) -> str:
    """Build ``dockerfile`` on ``python_ref`` (``--build-arg PYTHON_IMAGE``), push it as ``<registry>/<name>`` and
    return ``<registry>/<name>@sha256:…`` as the registry serves it. Before it is tagged as cached, ``smoke`` must
    run in it and its config must show ``user`` and ``entrypoint``."""
    tag = f"ctx-{content_key(dockerfile, context, python_ref)[:16]}"
    have = registry_digest(store.registry, name, tag)
    if have is not None:
        return image_ref(store.registry, name, have)
    with _locked(store):
        have = registry_digest(store.registry, name, tag)
        if have is not None:
            return image_ref(store.registry, name, have)
        t0 = time.monotonic()
        ensure_local(store, python_ref)
        local = f"localhost/digest-{name}:{tag}"
        host_ca = HOST_CA_BUNDLE if HOST_CA_BUNDLE.is_file() else None
        iidfile = store.cache / "tmp" / f"{name}.iid"
        bud = bud_argv(store, dockerfile, context, local, build_args={"PYTHON_IMAGE": python_ref},
                       host_ca_bundle=host_ca, layers=True, iidfile=iidfile)
        _run(store, f"{name}-build", bud)
        image_id = iidfile.read_text().strip().removeprefix("sha256:")
        built = time.monotonic() - t0
        if smoke:
            run_in_image(store, local, smoke, step=f"{name}-smoke")
        have = _push(store, f"{name}-push", local, f"{store.registry}/{name}:pending-{tag}")
        ref = _publish(store, name, tag, have, user=user, entrypoint=entrypoint)
        _drop_older(store, name, keep_id=image_id, since=time.time() - (time.monotonic() - t0))
        _log(f"{name} image built in {built:.1f} s, pushed in {time.monotonic() - t0 - built:.1f} s ({ref})")
        return ref


def _images(store: ImageStore, *filters: str) -> list[dict[str, Any]]:
    out = subprocess.run(buildah_argv(store, "images", "--all", "--json", "--no-trunc",
                                      *(f"--filter={f}" for f in filters)),
                         capture_output=True, env=_env(store), check=False).stdout
    try:
        images: list[dict[str, Any]] = json.loads(out or b"[]")
    except ValueError:
        return []
    return images


def _drop_older(store: ImageStore, name: str, keep_id: str, since: float) -> None:
    """Free the storage of earlier builds of ``name`` (the registry keeps them): their named images, then, pass by
    pass, build-step images older than ``since`` that nothing builds on any more. Steps this build reused have
    children, so the ``--layers`` cache stays. Failures are harmless."""
    ours = (f"localhost/digest-{name}:ctx-", f"{store.registry}/{name}@", f"{store.registry}/{name}:")
    keep = keep_id.removeprefix("sha256:")
    old = [str(i["id"]) for i in _images(store) if str(i.get("id")).removeprefix("sha256:") != keep
           and i.get("names") and all(str(n).startswith(ours) for n in i["names"])]
    if old:  # --force: an image with several names (a tag and a pulled digest) is removed only so
        _ok(store, buildah_argv(store, "rmi", "--force", *old))
    for _ in range(64):
        stale = [str(i["id"]) for i in _images(store, "dangling=true")
                 if not i.get("names") and float(i.get("created") or 0) < since]
        if not stale or not _ok(store, buildah_argv(store, "rmi", *stale)):
            return


# --- integration check ----------------------------------------------------------------------------------------------


def _size(store: ImageStore, ref: str) -> int:
    """Compressed size of an image in the registry (config + layers)."""
    repo, _, reference = ref.removeprefix(f"{store.registry}/").replace("@", ":", 1).partition(":")
    found = registry_manifest(store.registry, repo, reference, method="GET")
    assert found is not None
    manifest = json.loads(found[2])
    return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])


def derived_image(store: ImageStore, ref: str, repo: str, *, labels: dict[str, str],
                  entrypoint: Sequence[str] | None = None) -> str:
    """An image made from ``ref`` by changing only its config (labels, optionally the entrypoint), pushed to
    ``repo``: a second digest of the same content (a "new release"), or one whose container fails at once.
    Cached by its inputs; returns ``<registry>/<repo>@sha256:…``."""
    key = sha256_hex(RECIPE, "derived", ref, json.dumps(labels, sort_keys=True), json.dumps(list(entrypoint or [])))
    tag = f"derived-{key[:16]}"
    have = registry_digest(store.registry, repo, tag)
    if have is not None:
        return image_ref(store.registry, repo, have)
    with _locked(store):
        _prepare(store)
        ensure_local(store, ref)
        ctr = _run(store, "derive", buildah_argv(store, "from", "--pull=never", "--signature-policy",
                                                 str(store.policy), ref), capture=True).strip().splitlines()[-1]
        try:
            config = [arg for name, value in sorted(labels.items()) for arg in ("--label", f"{name}={value}")]
            if entrypoint is not None:
                config += ["--entrypoint", json.dumps(list(entrypoint))]
            _run(store, "derive", buildah_argv(store, "config", *config, ctr))
            local = f"localhost/digest-{repo}:{tag}"
            _run(store, "derive", buildah_argv(store, "commit", "--quiet", ctr, local))
        finally:
            _ok(store, buildah_argv(store, "rm", ctr))
        digest = _push(store, "derive-push", local, f"{store.registry}/{repo}:{tag}")
    return image_ref(store.registry, repo, digest)


def main(argv: Sequence[str] | None = None) -> int:
    """Build (or find) the four images, check them as shipped and print their references as JSON."""
    parser = argparse.ArgumentParser(prog="python -m digest_cluster.images", description=main.__doc__)
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--registry", required=True, help="a running plain-HTTP registry, e.g. 127.0.0.1:5000")
    parser.add_argument("--pause-binary", type=Path, required=True)
    parser.add_argument("--ca-pem", type=Path, help="a CA the python image should trust")
    parser.add_argument("--context", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    store = ImageStore(args.cache, args.registry)
    report: dict[str, Any] = {}

    def timed(label: str, ref: str, t0: float) -> str:
        report[label] = {"ref": ref, "seconds": round(time.monotonic() - t0, 3), "bytes": _size(store, ref)}
        return ref

    t0 = time.monotonic()
    timed("pause", pause_image(store, args.pause_binary), t0)
    t0 = time.monotonic()
    py = timed("python", python_image(store, args.ca_pem.read_bytes() if args.ca_pem else None), t0)
    for name in ("operator", "worker"):
        t0 = time.monotonic()
        timed(name, project_image(store, name, args.context / f"Dockerfile.{name}", args.context, py), t0)
    out = run_in_image(store, report["worker"]["ref"], [
        "python3", "-c", "import os, digest_worker, botbuilder.core; print(os.getuid(), digest_worker.__file__)"])
    report["worker_import"] = out.strip()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
