"""The network guard: what it drops and where, as rule specs (the real rules are exercised by the cluster tier)."""

from __future__ import annotations

from digest_cluster import network
from digest_cluster.layout import BRIDGE, POD_CIDR, SERVICE_CIDR


def test_guard_drops_forwarded_and_pod_or_service_traffic_on_every_uplink() -> None:
    rules = network.guard_rules(["eth0", "wlan0"])
    for uplink in ("eth0", "wlan0"):
        specs = [" ".join(spec) for tool, spec in rules if tool == "iptables" and uplink in spec]
        assert any(s.startswith(f"FORWARD -o {uplink} ") and s.endswith("-j DROP") for s in specs)
        assert any(f"POSTROUTING -o {uplink} -s {POD_CIDR}" in s for s in specs)
        assert any(f"POSTROUTING -o {uplink} -d {SERVICE_CIDR}" in s for s in specs)
        assert ("ip6tables", ["FORWARD", "-o", uplink, "-m", "comment", "--comment", network.COMMENT, "-j",
                              "DROP"]) in rules
    # every rule is tagged, so `remove` deletes exactly what `apply` added
    assert all(network.COMMENT in spec for _, spec in rules)


def test_uplinks_come_from_default_routes_without_the_bridge_or_duplicates() -> None:
    output = ("default via 192.0.2.1 dev eth0 proto dhcp src 192.0.2.10 metric 100\n"
              "default via fe80::1 dev eth0 proto ra metric 1024 pref medium\n"
              f"default dev {BRIDGE} scope link\n"
              "default via 198.51.100.1 dev ens5\n")
    assert network.parse_uplinks(output) == ["eth0", "ens5"]
    assert network.parse_uplinks("") == []


def test_kubelet_leftovers_cover_the_chains_kube_proxy_cleanup_keeps() -> None:
    commands = [" ".join(c) for c in network.kubelet_leftover_chains()]
    assert "iptables -t filter -D INPUT -j KUBE-FIREWALL" in commands
    assert "iptables -t mangle -X KUBE-IPTABLES-HINT" in commands
    assert "ip6tables -t nat -X KUBE-KUBELET-CANARY" in commands
