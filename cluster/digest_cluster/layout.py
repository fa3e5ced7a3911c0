"""Where the local cluster lives: fixed addresses on the harness's own bridge, and the paths of its state.

One cluster per machine: the kubelet, containerd and CNI hard-code a few host paths, and the node's addresses are
fixed. Everything the cluster serves listens on loopback or on the bridge's address (the node IP), which exists
only on this machine; pods reach host services (the emulator, Teams, PostgreSQL, the registry's pulls go through
containerd on the host) at `NODE_IP`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "dgpbr0"
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
NODE_NAME = "digest-node"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443
REGISTRY = "127.0.0.1:5000"
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
KCM_PORT = 10257
SCHEDULER_PORT = 10259
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
PROXY_HEALTHZ_PORT = 10256
PROXY_METRICS_PORT = 10249
COREDNS_HEALTH_PORT = 8181
COREDNS_READY_PORT = 8182

# Host paths the kubelet, containerd and the CNI plugins use whatever they are configured with; removed at `down`.
HARDCODED_HOST_PATHS = (
    "/var/lib/kubelet/device-plugins", "/var/log/containers", "/var/log/pods", "/var/lib/cni",
    "/etc/cni/net.d/cni.lock", "/run/containerd/s",
)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "digest-pipelines"


def default_state_dir() -> Path:
    """`DIGEST_CLUSTER_DIR`, else /var/lib/digest-cluster (the cluster needs root)."""
    return Path(os.environ.get("DIGEST_CLUSTER_DIR", "/var/lib/digest-cluster"))


@dataclass(frozen=True)
class Layout:
    """The paths of one cluster's state (`root`) and of the caches that outlive it."""

    root: Path
    cache: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(default_state_dir(), cache_root())

    # per cluster (removed by `down --purge`; kept otherwise so logs can be read)
    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd" / "containerd.sock"

    # outlive the cluster
    @property
    def ca_dir(self) -> Path:
        """The local CA: kept so images that trust it and the emulator's certificates stay valid across clusters."""
        return self.cache / "cluster" / "ca"

    @property
    def containerd_root(self) -> Path:
        """containerd's content store and snapshots: pulled images stay warm across clusters."""
        return self.cache / "cluster" / "containerd"

    @property
    def registry_data(self) -> Path:
        return self.cache / "cluster" / "registry"

    @property
    def images(self) -> Path:
        return self.cache / "cluster" / "images"
