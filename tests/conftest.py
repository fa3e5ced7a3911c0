pytest_plugins = ["tests.support.kube_fixture", "tests.support.sbemulator"]
