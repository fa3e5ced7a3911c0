"""The image builder's pure parts: what the Dockerfiles copy, the content key that decides a rebuild, the tool
command lines and configs (nothing may resolve to Docker Hub), the config checks, the registry client and the errors.
The real builds run in the cluster tier."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from digest_cluster import images
from digest_cluster.images import ImageBuildError, ImageStore
from tests.support.samples import ROOT

STORE = ImageStore(Path("/srv/cache/images"), "127.0.0.1:5000")
COPIED = {
    "Dockerfile.operator": ["requirements/build.txt", "pyproject.toml", "uv.lock", "README.md", "api", "operator",
                            "cli"],
    "Dockerfile.worker": ["requirements/build.txt", "pyproject.toml", "uv.lock", "README.md", "api", "worker", "dlq",
                          "cli"],
}
"""Each image holds the API, its component and the CLI (the worker image also runs the DLQ monitor); the build stage
first installs the build tools from the hashed requirements/build.txt."""


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.worker"])
def test_dockerfiles_take_the_base_as_a_build_arg_defaulting_to_python_slim(name: str) -> None:
    words = [(word, rest) for word, rest in images._instructions((ROOT / name).read_text())]
    assert words[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim")
    froms = [rest for word, rest in words if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.worker"])
def test_the_context_paths_of_the_project_dockerfiles(name: str) -> None:
    assert images.copied_paths((ROOT / name).read_text()) == COPIED[name]


def test_copied_paths_skips_stages_and_reads_flags_json_and_continuations() -> None:
    text = """# syntax=docker/dockerfile:1
FROM base AS build
COPY --chown=1:1 a.txt \\
     ./b/ /dst/
ADD ["c d.txt", "/dst/"]
COPY --from=build /dist /dist
COPY ./a.txt /again
"""
    assert images.copied_paths(text) == ["a.txt", "b", "c d.txt"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM ${PYTHON_IMAGE}\nCOPY app.toml ./\nCOPY pkg ./pkg\n")
    (tmp_path / "app.toml").write_text("[x]\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("A = 1\n")
    (tmp_path / "docs.md").write_text("docs\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    return tmp_path


def _key(repo: Path, python_ref: str = "127.0.0.1:5000/python@sha256:aa") -> str:
    return images.content_key(repo / "Dockerfile", repo, python_ref)


def test_the_content_key_follows_copied_files_in_the_working_tree(repo: Path) -> None:
    before = _key(repo)
    assert _key(repo) == before
    (repo / "pkg" / "mod.py").write_text("A = 2\n")  # an uncommitted edit counts
    edited = _key(repo)
    assert edited != before
    (repo / "pkg" / "new.py").write_text("")  # so does a new, untracked file that COPY would take
    assert _key(repo) != edited
    (repo / "pkg" / "new.py").unlink()
    assert _key(repo) == edited
    (repo / "pkg" / "mod.py").chmod(0o755)
    assert _key(repo) != edited


def test_the_content_key_ignores_what_the_build_does_not_copy_or_use(repo: Path) -> None:
    before = _key(repo)
    (repo / "docs.md").write_text("other docs\n")
    (repo / "pkg" / "__pycache__").mkdir()
    (repo / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (repo / "pkg" / "run.log").write_text("ignored by git\n")
    assert _key(repo) == before


def test_the_content_key_follows_the_dockerfile_and_the_base(repo: Path) -> None:
    before = _key(repo)
    assert _key(repo, "127.0.0.1:5000/python@sha256:bb") != before
    (repo / "Dockerfile").write_text("FROM ${PYTHON_IMAGE}\nCOPY app.toml ./\nCOPY pkg ./pkg\nUSER 1\n")
    assert _key(repo) != before


def test_the_content_key_outside_git_walks_the_copied_paths(repo: Path, tmp_path_factory: pytest.TempPathFactory
                                                            ) -> None:
    plain = tmp_path_factory.mktemp("plain")
    for rel in ("Dockerfile", "app.toml", "pkg/mod.py"):
        (plain / rel).parent.mkdir(parents=True, exist_ok=True)
        (plain / rel).write_bytes((repo / rel).read_bytes())
    (plain / "pkg" / "__pycache__").mkdir()
    (plain / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"\0")
    assert images.context_files(plain, ["app.toml", "pkg"]) == ["app.toml", "pkg/mod.py"]
    assert _key(plain) == _key(repo)  # the key is content, not where the checkout lives


def test_the_project_key_covers_the_real_sources() -> None:
    files = images.context_files(ROOT, COPIED["Dockerfile.worker"])
    assert {"pyproject.toml", "uv.lock", "README.md", "worker/digest_worker/__init__.py",
            "dlq/digest_dlq/__init__.py"} <= set(files)
    assert not any("__pycache__" in f or f.startswith(("tests/", "emulator/", "cluster/")) for f in files)


def test_registries_conf_has_no_search_registries_and_ours_is_insecure() -> None:
    conf = tomllib.loads(images.registries_conf("127.0.0.1:5000"))
    assert conf == {"unqualified-search-registries": [],
                    "registry": [{"location": "127.0.0.1:5000", "insecure": True}]}


def test_bud_never_pulls_uses_the_private_storage_and_mounts_the_host_bundle_only_when_given() -> None:
    argv = images.bud_argv(STORE, Path("/repo/Dockerfile.worker"), Path("/repo"), "localhost/digest-worker:ctx-1",
                           build_args={"PYTHON_IMAGE": "127.0.0.1:5000/python@sha256:aa"},
                           host_ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"), layers=True)
    assert argv[:7] == ["buildah", "--root", "/srv/cache/images/buildah/root", "--runroot",
                        "/srv/cache/images/buildah/runroot", "--storage-driver", "overlay"]
    assert argv[7] == "bud"
    assert {"--pull=never", "--layers"} <= set(argv)
    assert argv[argv.index("--isolation") + 1] == "chroot"
    assert argv[argv.index("--build-arg") + 1] == "PYTHON_IMAGE=127.0.0.1:5000/python@sha256:aa"
    assert argv[argv.index("-v") + 1] == ("/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt"
                                          ":ro")
    assert argv[-5:] == ["-f", "/repo/Dockerfile.worker", "-t", "localhost/digest-worker:ctx-1", "/repo"]
    plain = images.bud_argv(STORE, Path("/c/Containerfile"), Path("/c"), "t")
    assert "-v" not in plain and "--build-arg" not in plain and "--layers" not in plain


def test_the_rootfs_comes_from_debian_only_and_its_key_from_its_inputs() -> None:
    argv = images.mmdebstrap_argv(Path("/x/rootfs.tar"))
    assert argv[:3] == ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates"]
    assert argv[argv.index("bookworm") + 1] == "/x/rootfs.tar"
    assert all(m.startswith("deb http://deb.debian.org/") for m in argv[argv.index("/x/rootfs.tar") + 1:])
    assert images.rootfs_key() == images.rootfs_key()


def test_the_python_stand_in_has_a_venv_at_usr_local_and_trusts_the_extra_ca() -> None:
    plain = images.python_containerfile("localhost/digest-base:k", with_ca=False)
    assert plain.startswith("FROM localhost/digest-base:k\n")
    assert "RUN python3 -m venv /usr/local" in plain
    assert "update-ca-certificates" not in plain and "COPY" not in plain
    env = next(line for line in plain.splitlines() if line.startswith("ENV "))
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in env
    assert "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt" in env
    assert "LANG=C.UTF-8" in env and " PATH=/usr/local/bin:" in env
    with_ca = images.python_containerfile("b", with_ca=True)
    assert "COPY digest-local-ca.crt /usr/local/share/ca-certificates/digest-local-ca.crt" in with_ca
    assert "&& update-ca-certificates" in with_ca
    assert len({images.python_key(None), images.python_key(b"A"), images.python_key(b"B")}) == 3


def test_the_config_check_names_what_differs() -> None:
    good = {"config": {"User": "10001:10001", "Entrypoint": ["digestctl"], "Env": ["A=1", "B=x=y"]}}
    images._check_config("r", good, user="10001", entrypoint=["digestctl"], env={"B": "x=y"})
    with pytest.raises(ImageBuildError, match=r"User is '0', want 10001; Entrypoint is None"):
        images._check_config("r", {"config": {"User": "0"}}, user="10001", entrypoint=["digestctl"])
    with pytest.raises(ImageBuildError, match="Env A is '1', want '2'"):
        images._check_config("r", good, env={"A": "2"})


def test_a_failed_step_names_the_command_its_exit_code_and_the_log_tail(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, "127.0.0.1:5000")
    images._prepare(store)
    assert images._run(store, "ok", ["sh", "-c", "echo out; echo err >&2"], capture=True) == "out\n"
    with pytest.raises(ImageBuildError) as failed:
        images._run(store, "broken", ["sh", "-c", "seq 1 100; echo boom >&2; exit 3"])
    message = str(failed.value)
    assert message.startswith("images: broken: `sh -c 'seq 1 100; echo boom >&2; exit 3'` exited 3; log ")
    assert message.endswith("\n99\n100\nboom") and "\n50\n" not in message
    assert failed.value.returncode == 3 and failed.value.log == tmp_path / "logs" / "broken.log"
    with pytest.raises(ImageBuildError, match="no-such-tool not found"):
        images._run(store, "missing", ["no-such-tool"])


class _Registry(http.server.BaseHTTPRequestHandler):
    manifests: ClassVar[dict[str, tuple[str, bytes]]] = {}
    accepts: ClassVar[list[str]] = []

    def _send(self, body: bool) -> None:
        self.accepts.append(self.headers.get("Accept", ""))
        reference = self.path.rsplit("/", 1)[-1]
        if reference not in self.manifests:
            self.send_response(404)
            self.end_headers()
            return
        media, data = self.manifests[reference]
        self.send_response(200)
        self.send_header("Content-Type", media)
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._send(body=False)

    def do_GET(self) -> None:
        self._send(body=True)

    def do_PUT(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.manifests[self.path.rsplit("/", 1)[-1]] = (self.headers["Content-Type"], data)
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    _Registry.manifests = {}
    _Registry.accepts = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_registry_client_reads_digests_and_retags_the_same_bytes(registry: str) -> None:
    manifest = json.dumps({"schemaVersion": 2}).encode()
    _Registry.manifests["pending-ctx-1"] = ("application/vnd.oci.image.manifest.v1+json", manifest)
    assert images.registry_digest(registry, "worker", "ctx-1") is None
    digest = images.registry_digest(registry, "worker", "pending-ctx-1")
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert "application/vnd.oci.image.manifest.v1+json" in _Registry.accepts[0]
    assert "application/vnd.docker.distribution.manifest.v2+json" in _Registry.accepts[0]
    assert images.registry_retag(registry, "worker", "pending-ctx-1", "ctx-1") == digest
    assert images.registry_digest(registry, "worker", "ctx-1") == digest


def test_an_unreachable_registry_is_a_clear_error() -> None:
    with pytest.raises(ImageBuildError, match=r"registry 127\.0\.0\.1:9 unreachable"):
        images.registry_digest("127.0.0.1:9", "worker", "ctx-1")
