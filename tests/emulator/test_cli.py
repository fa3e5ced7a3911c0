"""`digestctl emulator` as a process: prints a connection string the SDK uses; bad config is a clear error."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus.management import ServiceBusAdministrationClient

from tests.support.kubeconfig import free_port

BIN = Path(sys.executable).parent


def test_emulator_command_serves_the_sdk(tmp_path: Path) -> None:
    config = tmp_path / "Config.json"
    config.write_text('{"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [{"Name": "jobs"}]}]}}'
                      ' // a comment\n')
    process = subprocess.Popen(
        [str(BIN / "digestctl"), "emulator", "--port", str(free_port()), "--config", str(config),
         "--queue", "extra:MaxDeliveryCount=2", "--key", "app=secret", "--tls-dir", str(tmp_path / "tls")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        connection_string = process.stdout.readline().strip()
        assert "SharedAccessKeyName=app;SharedAccessKey=secret;UseDevelopmentEmulator=true" in connection_string
        with ServiceBusClient.from_connection_string(connection_string) as client:
            with client.get_queue_sender("jobs") as sender:
                sender.send_messages(ServiceBusMessage("job"))
            with client.get_queue_receiver("jobs", max_wait_time=2) as receiver:
                (message,) = receiver.receive_messages(max_wait_time=2)
                receiver.complete_message(message)
        with ServiceBusAdministrationClient.from_connection_string(
                connection_string, connection_verify=str(tmp_path / "tls" / "ca.pem")) as admin:
            assert admin.get_queue("extra").max_delivery_count == 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert process.returncode == 0


def test_invalid_config_is_refused_before_serving(tmp_path: Path) -> None:
    config = tmp_path / "Config.json"
    config.write_text('{"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "q", '
                      '"Properties": {"LockDuration": "soon"}}]}]}}')
    result = subprocess.run([str(BIN / "digestctl"), "emulator", "--config", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    assert "Queues[0] ('q').Properties.LockDuration: 'soon' is not an ISO 8601 duration" in result.stderr
