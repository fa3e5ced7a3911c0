import os

import pytest

from tests.support import system

pytest_plugins = ["tests.support.kube_fixture", "tests.support.sbemulator"]


def pytest_configure(config: pytest.Config) -> None:
    """Provision the Debian packages the selected tests start, once, before any test (not in xdist workers)."""
    if hasattr(config, "workerinput") or config.option.help:
        return
    absent = system.missing(config.args, config.option.markexpr)
    stop = system.provision(absent, root=os.geteuid() == 0)
    if stop is not None:
        pytest.exit(stop, returncode=pytest.ExitCode.USAGE_ERROR)
