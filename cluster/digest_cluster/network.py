"""The cluster's network: its own bridge, and the guard that keeps pod and service traffic on this machine.

The guard goes in before the first Service exists: a route for the service range onto the bridge (so a request to a
ClusterIP kube-proxy has not programmed yet goes to the bridge, not out of the default route), and `mangle` drops
for anything forwarded to the uplink or sourced from the pod range / addressed to the service range on the way out.
kube-proxy never writes the `mangle` table. Rule lists are pure (tested); `apply`/`remove` run them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from digest_cluster.layout import BRIDGE, NODE_IP, POD_CIDR, SERVICE_CIDR

COMMENT = "digest-cluster-guard"
# kube-proxy and the kubelet change these; `down` restores what they were before `up`
SYSCTLS = (
    "net.ipv4.ip_forward", "vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops",
    "net.netfilter.nf_conntrack_tcp_timeout_established", "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.bridge.bridge-nf-call-iptables",
)


class NetworkError(RuntimeError):
    """A network command failed; the message has the command and its output."""


def guard_rules(uplinks: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(tool, rule spec) for every guard rule, for `-C`/`-A`/`-D` in the `mangle` table."""
    tag = ["-m", "comment", "--comment", COMMENT]
    rules: list[tuple[str, list[str]]] = []
    for uplink in uplinks:
        rules += [
            ("iptables", ["FORWARD", "-o", uplink, *tag, "-j", "DROP"]),
            ("iptables", ["POSTROUTING", "-o", uplink, "-s", POD_CIDR, *tag, "-j", "DROP"]),
            ("iptables", ["POSTROUTING", "-o", uplink, "-d", SERVICE_CIDR, *tag, "-j", "DROP"]),
            ("ip6tables", ["FORWARD", "-o", uplink, *tag, "-j", "DROP"]),
        ]
    return rules


def parse_uplinks(route_output: str) -> list[str]:
    """Interfaces named by `ip -o route show default` (IPv4 or IPv6), in order, without duplicates."""
    devices: list[str] = []
    for line in route_output.splitlines():
        words = line.split()
        if "dev" in words:
            device = words[words.index("dev") + 1]
            if device != BRIDGE and device not in devices:
                devices.append(device)
    return devices


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True)
    except FileNotFoundError as error:
        if check:
            raise NetworkError(f"{args[0]} is not installed: {error}") from None
        return subprocess.CompletedProcess(args, 127, "", str(error))
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def uplinks() -> list[str]:
    """Every interface a default route uses (the ways off this machine); `lo` if there are none."""
    output = _run(["ip", "-o", "route", "show", "default"]).stdout + _run(
        ["ip", "-o", "-6", "route", "show", "default"], check=False).stdout
    return parse_uplinks(output) or ["lo"]


def read_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for name in SYSCTLS:
        result = _run(["sysctl", "-n", name], check=False)
        if result.returncode == 0:
            values[name] = result.stdout.strip()
    return values


def restore_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        _run(["sysctl", "-q", "-w", f"{name}={value}"], check=False)


def apply() -> None:
    """Create the bridge with the node IP, the service-range route and the guard rules (idempotent)."""
    if _run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addresses = _run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE]).stdout
    if f"{NODE_IP}/" not in addresses:
        _run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    for tool, rule in guard_rules(uplinks()):
        if _run([tool, "-t", "mangle", "-C", *rule], check=False).returncode != 0:
            _run([tool, "-t", "mangle", "-A", *rule])
    _run(["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP])
    _run(["modprobe", "br_netfilter"], check=False)  # built in on some kernels; kube-proxy needs bridged iptables
    _run(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"], check=False)
    _run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def guard_packets() -> int:
    """Packets the guard has dropped so far (0 unless something tried to leave the machine)."""
    total = 0
    for tool in ("iptables", "ip6tables"):
        listing = _run([tool, "-t", "mangle", "-L", "-v", "-n", "-x"], check=False).stdout
        for line in listing.splitlines():
            if COMMENT in line and line.split()[0].isdigit():
                total += int(line.split()[0])
    return total


def remove() -> None:
    """Delete the guard rules, the route and the bridge (its addresses and routes go with it)."""
    for tool, rule in guard_rules(uplinks()):
        while _run([tool, "-t", "mangle", "-D", *rule], check=False).returncode == 0:
            pass
    _run(["ip", "route", "del", SERVICE_CIDR, "dev", BRIDGE], check=False)
    _run(["ip", "link", "del", BRIDGE], check=False)


def kubelet_leftover_chains() -> list[list[str]]:
    """iptables commands that delete the chains the kubelet creates and `kube-proxy --cleanup` leaves behind."""
    commands: list[list[str]] = []
    for tool in ("iptables", "ip6tables"):
        commands += [
            [tool, "-t", "filter", "-D", "INPUT", "-j", "KUBE-FIREWALL"],
            [tool, "-t", "filter", "-D", "OUTPUT", "-j", "KUBE-FIREWALL"],
        ]
        for table, chain in (("filter", "KUBE-FIREWALL"), ("filter", "KUBE-KUBELET-CANARY"),
                             ("nat", "KUBE-KUBELET-CANARY"), ("mangle", "KUBE-KUBELET-CANARY"),
                             ("mangle", "KUBE-IPTABLES-HINT"), ("filter", "KUBE-PROXY-CANARY"),
                             ("nat", "KUBE-PROXY-CANARY"), ("mangle", "KUBE-PROXY-CANARY")):
            commands += [[tool, "-t", table, "-F", chain], [tool, "-t", table, "-X", chain]]
    return commands


def remove_kubelet_chains() -> None:
    for command in kubelet_leftover_chains():
        _run(command, check=False)
