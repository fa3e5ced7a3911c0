"""The configuration files of the cluster's components, as pure functions of the layout (text in, text out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from digest_cluster.layout import (
    API_PORT,
    BRIDGE,
    CLUSTER_DOMAIN,
    COREDNS_HEALTH_PORT,
    COREDNS_READY_PORT,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    NODE_IP,
    NODE_NAME,
    POD_CIDR,
    PROXY_HEALTHZ_PORT,
    PROXY_METRICS_PORT,
    REGISTRY,
    Layout,
)

PAUSE_IMAGE = f"{REGISTRY}/pause:3.10"
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str, namespace: str = "default") -> str:
    """A kubeconfig with client-certificate authentication (paths, not inline data: the files stay in the PKI)."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "digest-cluster",
        "clusters": [{"name": "digest-cluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "digest-cluster",
                      "context": {"cluster": "digest-cluster", "user": user, "namespace": namespace}}],
    }, sort_keys=False)


def api_server_url() -> str:
    return f"https://{NODE_IP}:{API_PORT}"


def containerd(layout: Layout) -> str:
    """containerd 2.x (config version 3). `restrict_oom_score_adj` is required on hosts without CAP_SYS_RESOURCE in
    the bounding set (runc cannot lower oom_score_adj there: `can't get final child's PID from pipe`)."""
    root, state, run = layout.containerd_root, layout.run / "containerd", layout.run / "runc"
    certs = layout.config / "certs.d"
    disabled = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs",
                "io.containerd.differ.v1.erofs", "io.containerd.mount-handler.v1.erofs",
                "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
    return f"""version = 3
root = "{root}"
state = "{state}"
disabled_plugins = {json.dumps(disabled)}
[grpc]
  address = "{layout.containerd_socket}"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{certs}"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "{run}"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{layout.config / 'cni'}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.transfer.v1.local"]
  config_path = "{certs}"
"""


BLACKHOLE_REGISTRY = "127.0.0.1:9"


def default_hosts() -> str:
    """containerd's `_default/hosts.toml`: every other registry resolves to a closed loopback port, so a pull of
    an image that is not in the local registry fails at once here and never leaves the machine (no DNS lookup)."""
    return f"""server = "http://{BLACKHOLE_REGISTRY}"
[host."http://{BLACKHOLE_REGISTRY}"]
  capabilities = ["pull", "resolve"]
"""


def registry_hosts() -> str:
    """containerd's hosts.toml for the local registry (plain HTTP on loopback)."""
    return f"""server = "http://{REGISTRY}"
[host."http://{REGISTRY}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"""


def cni(layout: Layout) -> str:
    """Bridge CNI on the harness's bridge (created beforehand with the node IP); no masquerade: pod traffic never
    leaves the machine (the network guard drops anything forwarded to the uplink)."""
    return json.dumps({"cniVersion": "1.0.0", "name": "digest-cluster", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": str(layout.state / "cni-ipam"),
                  "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}, indent=2)


def kubelet(layout: Layout) -> str:
    """KubeletConfiguration. `failCgroupV1: false` is required on cgroup v1 hosts (1.36 refuses them by default)."""
    pki = layout.pki
    return yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "cgroupsPerQOS": True, "enforceNodeAllocatable": ["pods"],
        "resolvConf": str(layout.config / "resolv.conf"),
        "clusterDomain": CLUSTER_DOMAIN, "clusterDNS": [NODE_IP],
        "podLogsDir": str(layout.state / "pod-logs"),
        "serializeImagePulls": False, "rotateCertificates": False, "serverTLSBootstrap": False,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                         "nodefs.inodesFree": "2%"},
        "syncFrequency": "10s", "fileCheckFrequency": "10s",
    }, sort_keys=False)


def resolv_conf() -> str:
    """Pods get cluster DNS only; a name outside the cluster domain never reaches the host's resolver."""
    return "nameserver 127.0.0.1\noptions ndots:1\n"


def kube_proxy(layout: Layout) -> str:
    """iptables mode; conntrack limits 0 leave the host's sysctls alone."""
    return yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clientConnection": {"kubeconfig": str(layout.config / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME, "clusterCIDR": POD_CIDR, "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"127.0.0.1:{PROXY_METRICS_PORT}",
        "nodePortAddresses": [POD_CIDR],
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"minSyncPeriod": "0s"},
    }, sort_keys=False)


def corefile(layout: Layout) -> str:
    """CoreDNS for `cluster.local` only, no `forward`: names outside the cluster fail here, never go upstream."""
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{COREDNS_HEALTH_PORT}
    ready 127.0.0.1:{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {layout.config / 'coredns.kubeconfig'} digest-cluster
        pods insecure
    }}
    cache 5
    loadbalance
}}
.:53 {{
    bind {NODE_IP}
    errors
}}
"""


def registry(layout: Layout) -> str:
    return yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"cache": {"blobdescriptor": "inmemory"},
                    "filesystem": {"rootdirectory": str(layout.registry_data)}, "delete": {"enabled": True}},
        "http": {"addr": REGISTRY, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }, sort_keys=False)
