"""Which Debian packages the selected tests start, and what the test command does when some are missing."""

from __future__ import annotations

from collections.abc import Sequence

from tests.support import system
from tests.support.samples import ROOT


def _names(args: list[str], markexpr: str = "") -> list[str]:
    return [p.name for p in system.needed(args, markexpr)]


def test_the_selection_decides_which_packages_count() -> None:
    everything = _names(["tests"])
    assert {"docker-registry", "apache2-utils", "postgresql", "prometheus", "runc", "buildah"} <= set(everything)
    assert _names(["tests"], "not cluster") == ["docker-registry", "apache2-utils", "postgresql", "prometheus"]
    assert _names(["tests/unit/api"]) == []
    assert _names(["tests/pinning/test_webhook.py::test_x"]) == ["docker-registry", "apache2-utils"]
    assert _names(["tests/pinning"], "e2e") == ["docker-registry", "apache2-utils"]
    assert _names(["tests/worker"], "e2e") == []  # the worker tier has no e2e mark
    assert "runc" in _names([str(ROOT / "tests" / "cluster")], "cluster")
    assert _names(["tests/unit"]) == ["postgresql", "prometheus"]


def test_missing_names_exactly_what_is_not_installed() -> None:
    def which(command: str) -> str | None:
        return None if command == "htpasswd" else f"/usr/bin/{command}"

    assert system.missing(["tests/pinning"], "", which) == ["apache2-utils"]


def test_not_root_stops_with_the_install_command_and_root_installs() -> None:
    installed: list[Sequence[str]] = []
    said: list[str] = []
    message = system.provision(["apache2-utils", "postgresql"], root=False, install=installed.append)
    assert message is not None and installed == []
    assert message.endswith("apt-get install -y --no-install-recommends apache2-utils postgresql")
    assert system.provision(["postgresql"], root=True, install=installed.append, say=said.append) is None
    assert installed == [["postgresql"]] and said and "postgresql" in said[0]
    assert system.provision([], root=False, install=installed.append) is None
