"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager as local processes.

Binaries come from `tests/controlplane/build` (compiled from the published Go modules into a cache outside the repo).
The apiserver runs like a normal cluster's: TLS from a generated CA, client-certificate authentication, a
service-account signing key, `Node,RBAC` authorization, the default admission plugins (+ NodeRestriction), and an
audit log of every request at Metadata level. The controller manager adds real garbage collection, the Deployment
and ReplicaSet controllers, namespace deletion and service-account tokens.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import trustme
import yaml

from digest_cluster.cluster import kubectl_binary
from tests.support.kubeconfig import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "tests" / "controlplane" / "build"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
ADMIN_USER = "digest-admin"

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}

# kube-controller-manager: what a cluster needs for our tests; the rest (nodes, volumes, cloud) is left out.
CONTROLLERS = (
    "namespace", "garbagecollector", "deployment", "replicaset", "job", "cronjob", "serviceaccount",
    "serviceaccount-token", "root-ca-cert-publisher",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, found or started; the message says what and where the logs are."""


def binaries_dir() -> Path:
    """Where the pinned binaries live: DIGEST_CONTROLPLANE_BIN, else the build script's cache directory."""
    override = os.environ.get("DIGEST_CONTROLPLANE_BIN")
    if override:
        return Path(override)
    out = subprocess.run([str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def find_binaries() -> Path:
    """The binaries' directory; raises ControlPlaneError naming the missing ones and the command that builds them."""
    directory = binaries_dir()
    missing = [name for name in BINARIES if not os.access(directory / name, os.X_OK)]
    if missing:
        raise ControlPlaneError(
            f"control-plane binaries missing in {directory}: {', '.join(missing)}. "
            f"Build them with `{BUILD_SCRIPT.relative_to(ROOT)}` (CI does this in .ci/run)."
        )
    return directory


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class ControlPlane:
    """A running control plane; `server` is the apiserver URL, `kubeconfig` an admin (system:masters) kubeconfig."""

    workdir: Path
    bin_dir: Path
    ca: trustme.CA
    server: str = ""
    kubeconfig: Path = field(default_factory=Path)
    audit_log: Path = field(default_factory=Path)
    etcd_url: str = ""
    processes: list[Process] = field(default_factory=list)
    _apiserver_args: list[str] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def admin_cert(self) -> Path:
        return self.workdir / "pki" / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.workdir / "pki" / "admin.key"

    # --- clients ---------------------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl with the admin kubeconfig; on failure (with check) the error names stdout and stderr."""
        result = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert:
            context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return context

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                params: str = "", token: str | None = None) -> tuple[int, dict[str, Any]]:
        """One API request as the admin (or with a bearer `token`); returns (HTTP status, decoded JSON body)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        url = self.server + path + (f"?{params}" if params else "")
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        context = self.ssl_context(client_cert=token is None)
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                payload = response.read()
                return response.status, json.loads(payload) if payload else {}
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                decoded = json.loads(payload) if payload else {}
            except ValueError:
                decoded = {"message": payload.decode(errors="replace")}
            return exc.code, decoded

    def get(self, path: str) -> dict[str, Any] | None:
        status, body = self.request("GET", path)
        if status == 404:
            return None
        assert status == 200, (status, body)
        return body

    def wait_for(self, path: str, predicate: Callable[[dict[str, Any] | None], bool],
                 within: float = 30.0, what: str = "") -> dict[str, Any] | None:
        """Poll `path` until `predicate(object or None)` holds; fail with the last seen object after `within`."""
        deadline = time.monotonic() + within
        while True:
            obj = self.get(path)
            if predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or path}; last seen: {json.dumps(obj)[:3000]}")
            time.sleep(0.1)

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound token of a service account (TokenRequest API, signed with the cluster's SA key)."""
        return self.kubectl("create", "token", name, "-n", namespace, f"--duration={seconds}s").stdout.strip()

    def connection_info(self, token: str) -> kopf.ConnectionInfo:
        """Kopf credentials for this apiserver with a bearer token (e.g. the operator's service account)."""
        return kopf.ConnectionInfo(server=self.server, ca_path=str(self.ca_file), token=token,
                                   default_namespace="default")

    def audit_entries(self, start: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Audit events written after byte offset `start`, and the new offset (complete lines only)."""
        with self.audit_log.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        entries = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        return entries, start + end

    # --- lifecycle -------------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> Process:
        log = self.workdir / "logs" / f"{name}.log"
        handle = log.open("ab")  # a restarted process appends
        popen = subprocess.Popen([str(self.bin_dir / name), *args], stdout=handle, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def _wait_healthy(self, process: Process, url: str, context: ssl.SSLContext | None, within: float) -> None:
        deadline = time.monotonic() + within
        last = ""
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with {process.popen.returncode}; log {process.log}:\n{tail(process.log)}")
            try:
                with urllib.request.urlopen(url, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise ControlPlaneError(f"{process.name} not healthy at {url} after {within} s ({last}); "
                                f"log {process.log}:\n{tail(process.log)}")

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir()
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        serving = self.ca.issue_cert("127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                                     "kubernetes.default.svc", "10.0.0.1", common_name="kube-apiserver")
        serving.cert_chain_pems[0].write_to_path(str(pki / "apiserver.crt"))
        serving.private_key_pem.write_to_path(str(pki / "apiserver.key"))
        # a SAN is needed: Go rejects an empty (critical) subjectAltName extension as unhandled
        admin = self.ca.issue_cert(ADMIN_USER, common_name=ADMIN_USER, organization_name="system:masters")
        admin.cert_chain_pems[0].write_to_path(str(self.admin_cert))
        admin.private_key_pem.write_to_path(str(self.admin_key))
        signer = self.ca.issue_cert("service-account-signer", common_name="service-account-signer")
        signer.private_key_pem.write_to_path(str(pki / "sa.key"))
        for key in pki.glob("*.key"):
            key.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "controlplane",
            "clusters": [{"name": "controlplane",
                          "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": ADMIN_USER, "user": {"client-certificate": str(self.admin_cert),
                                                    "client-key": str(self.admin_key)}}],
            "contexts": [{"name": "controlplane",
                          "context": {"cluster": "controlplane", "user": ADMIN_USER, "namespace": "default"}}],
        }))
        self.kubeconfig.chmod(0o600)

    def start_core(self, within: float = 60) -> None:
        """Start etcd and kube-apiserver and wait until the apiserver is ready."""
        (self.workdir / "logs").mkdir(exist_ok=True)
        self._write_pki()
        pki = self.workdir / "pki"
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn("etcd", [
            "--name=controlplane", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=controlplane={peer_url}", "--unsafe-no-fsync=true", "--log-level=warn",
            "--quota-backend-bytes=1073741824",
        ])
        self.server = f"https://127.0.0.1:{api_port}"
        self.audit_log = self.workdir / "logs" / "audit.log"
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        self._wait_healthy(etcd, f"{etcd_url}/health", None, within)
        self._apiserver_args = [
            f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}", f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}",
            f"--service-account-issuer={self.server}", f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking", "--audit-log-format=json",
            "--profiling=false", "--v=1",
        ]
        apiserver = self._spawn("kube-apiserver", self._apiserver_args)
        self._write_kubeconfig()
        self._wait_healthy(apiserver, f"{self.server}/readyz", self.ssl_context(), within)

    def etcd_revision(self) -> int:
        """etcd's current revision (its JSON gateway): the newest resourceVersion of anything stored."""
        header = self._etcd("/v3/kv/range", {"key": "AA=="})["header"]
        return int(header["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now, as the API server does every 5 minutes: a watch from an older
        resourceVersion can then only be answered with 410 Gone. Returns the revision compacted to."""
        revision = self.etcd_revision()
        self._etcd("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _etcd(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def restart_apiserver(self, *, compact: bool = True, within: float = 60) -> None:
        """Kill kube-apiserver (every watch drops), optionally compact etcd meanwhile, and start it again on the
        same port: clients that resume their watches from the resourceVersions they had get 410 Gone."""
        (apiserver,) = [p for p in self.processes if p.name == "kube-apiserver"]
        apiserver.popen.kill()  # a crash: its graceful shutdown waits for the open watches
        apiserver.popen.wait(timeout=30)
        self.processes.remove(apiserver)
        if compact:
            self.compact_etcd()
        restarted = self._spawn("kube-apiserver", self._apiserver_args)
        self._wait_healthy(restarted, f"{self.server}/readyz", self.ssl_context(), within)

    def start_controller_manager(self, within: float = 60) -> None:
        port = free_port()
        kcm = self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}", f"--controllers={','.join(CONTROLLERS)}",
            "--leader-elect=false", "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
            f"--root-ca-file={self.ca_file}", "--concurrent-gc-syncs=5", "--v=1",
        ])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # KCM serves with an in-memory self-signed certificate
        self._wait_healthy(kcm, f"https://127.0.0.1:{port}/healthz", insecure, within)

    def check_running(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                raise ControlPlaneError(f"{process.name} exited with {process.popen.returncode}; "
                                        f"log {process.log}:\n{tail(process.log)}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                process.popen.terminate()
                try:
                    process.popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait(timeout=5)
        self.processes.clear()


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def running_control_plane(workdir: Path, before_controllers: Callable[[ControlPlane], None] | None = None,
                          ) -> Iterator[ControlPlane]:
    """Start a control plane in `workdir`; `before_controllers` runs between apiserver and controller-manager
    start (install CRDs there, so garbage collection knows their kinds from its first discovery)."""
    plane = ControlPlane(workdir=workdir, bin_dir=find_binaries(), ca=trustme.CA())
    try:
        plane.start_core()
        if before_controllers is not None:
            before_controllers(plane)
        plane.start_controller_manager()
        yield plane
    finally:
        plane.stop()
