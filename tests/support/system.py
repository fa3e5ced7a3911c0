"""The Debian packages the selected tests start (a real registry, PostgreSQL, Prometheus, the node's tools).

`python3 -m uv run --frozen pytest` provisions them before any test runs: as root it installs what is missing with
apt-get; otherwise it stops at once and names exactly what to install. Which packages count follows the selection
(paths and `-m`), so `pytest tests/unit/api` needs none.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _pytest.mark.expression import Expression

ROOT = Path(__file__).resolve().parents[2]

UNMARKED: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tier:
    """Tests under `path` (a folder or file relative to the repository) carrying one of `markers` sets."""

    path: str
    markers: tuple[tuple[str, ...], ...] = (UNMARKED,)


@dataclass(frozen=True)
class Package:
    name: str
    present: tuple[str, ...]
    """Commands on PATH (or in /usr/sbin), or globs of files, that the package installs."""
    tiers: tuple[Tier, ...]

    def installed(self, which: Callable[[str], str | None] = shutil.which) -> bool:
        return all((glob.glob(p) if p.startswith("/") else which(p) or os.path.exists(f"/usr/sbin/{p}"))
                   for p in self.present)


CLUSTER = Tier("tests/cluster", (("cluster",),))
PINNING = Tier("tests/pinning", (UNMARKED, ("e2e",)))
PACKAGES = (
    Package("docker-registry", ("docker-registry",), (PINNING, CLUSTER)),
    Package("apache2-utils", ("htpasswd",), (PINNING,)),
    Package("postgresql", ("/usr/lib/postgresql/*/bin/initdb",),
            (Tier("tests/worker"), Tier("tests/unit/worker"), CLUSTER)),
    Package("prometheus", ("prometheus", "promtool"),
            (Tier("tests/unit/operator/test_alert_rules.py"), Tier("tests/unit/cluster/test_prometheus.py"), CLUSTER)),
    Package("runc", ("runc",), (CLUSTER,)),
    Package("containernetworking-plugins", ("/usr/lib/cni/bridge",), (CLUSTER,)),
    Package("iptables", ("iptables", "ip6tables"), (CLUSTER,)),
    Package("conntrack", ("conntrack",), (CLUSTER,)),
    Package("mmdebstrap", ("mmdebstrap",), (CLUSTER,)),
    Package("umoci", ("umoci",), (CLUSTER,)),
    Package("skopeo", ("skopeo",), (CLUSTER,)),
    Package("buildah", ("buildah",), (CLUSTER,)),
    Package("gcc", ("gcc",), (CLUSTER,)),
    Package("libc6-dev", ("/usr/include/stdio.h",), (CLUSTER,)),
    Package("iproute2", ("ip",), (CLUSTER,)),
    Package("procps", ("sysctl",), (CLUSTER,)),
)


def _overlaps(arg: str, path: str) -> bool:
    """Whether the command-line argument (a path, maybe `file.py::test`) selects tests under `path`."""
    target = Path(arg.split("::")[0])
    target = (target if target.is_absolute() else Path.cwd() / target).resolve()
    tier = (ROOT / path).resolve()
    return target == tier or tier in target.parents or target in tier.parents


def selected(tier: Tier, args: Sequence[str], markexpr: str) -> bool:
    if not any(_overlaps(arg, tier.path) for arg in args):
        return False
    if not markexpr:
        return True
    expression = Expression.compile(markexpr)

    def carrying(marks: tuple[str, ...]) -> Callable[..., bool]:
        return lambda name, **_: name in marks

    return any(expression.evaluate(carrying(marks)) for marks in tier.markers)


def needed(args: Sequence[str], markexpr: str, packages: Iterable[Package] = PACKAGES) -> list[Package]:
    return [p for p in packages if any(selected(t, args, markexpr) for t in p.tiers)]


def missing(args: Sequence[str], markexpr: str, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The Debian packages the selection starts that are not installed, by name."""
    return [p.name for p in needed(args, markexpr) if not p.installed(which)]


def apt_install(packages: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


def provision(absent: Sequence[str], *, root: bool, install: Callable[[Sequence[str]], None] = apt_install,
              say: Callable[[str], None] = print) -> str | None:
    """Install what is absent (root), or return the message to stop with (not root); None when nothing is absent
    or all of it was installed."""
    if not absent:
        return None
    command = f"apt-get install -y --no-install-recommends {' '.join(absent)}"
    if not root:
        return f"the selected tests need Debian packages that are not installed; as root run:\n  {command}"
    say(f"installing the Debian packages the selected tests start: {' '.join(absent)}")
    install(absent)
    return None


if __name__ == "__main__":  # `python -m tests.support.system`: provision for the whole suite (.ci/run, before builds)
    import sys

    message = provision(missing([str(ROOT / "tests")], ""), root=os.geteuid() == 0)
    if message is not None:
        sys.exit(message)
