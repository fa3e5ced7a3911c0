"""The cluster components' configuration: the settings this kind of host needs and the isolation choices."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from digest_cluster import configs
from digest_cluster.layout import NODE_IP, POD_CIDR, REGISTRY, Layout

LAYOUT = Layout(Path("/srv/cluster"), Path("/srv/cache"))


def test_containerd_clamps_oom_score_adj_and_uses_the_local_pause_image() -> None:
    config = tomllib.loads(configs.containerd(LAYOUT))
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True  # runc cannot lower it without CAP_SYS_RESOURCE
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == f"{REGISTRY}/pause:3.10"  # never registry.k8s.io
    assert config["grpc"]["address"].startswith("/srv/cluster/")
    assert config["root"].startswith("/srv/cache/")  # pulled images outlive the cluster
    hosts = tomllib.loads(configs.registry_hosts())
    assert hosts["server"] == f"http://{REGISTRY}"


def test_kubelet_runs_on_cgroup_v1_with_cluster_dns_only() -> None:
    config = yaml.safe_load(configs.kubelet(LAYOUT))
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["readOnlyPort"] == 0
    assert config["clusterDNS"] == [NODE_IP]
    assert configs.resolv_conf().splitlines()[0] == "nameserver 127.0.0.1"


def test_coredns_serves_the_cluster_domain_and_never_forwards() -> None:
    corefile = configs.corefile(LAYOUT)
    assert "kubernetes cluster.local" in corefile
    assert "forward" not in corefile
    assert corefile.count(f"bind {NODE_IP}") == 2


def test_cni_bridge_does_not_masquerade_pod_traffic() -> None:
    config = json.loads(configs.cni(LAYOUT))
    bridge = config["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"][0][0]["subnet"] == POD_CIDR


def test_kube_proxy_leaves_host_conntrack_sysctls_alone() -> None:
    config = yaml.safe_load(configs.kube_proxy(LAYOUT))
    assert config["conntrack"] == {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}
    assert config["mode"] == "iptables"
