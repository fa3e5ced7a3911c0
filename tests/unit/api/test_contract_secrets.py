"""Secret variables: the plain variable or `<NAME>_FILE` naming a file (what the worker and the DLQ monitor read)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from digest_api import contract
from digest_api.contract import SecretError, resolve_secrets, secret

NAME = contract.TEAMS_APP_PASSWORD
VALUE = "s3cr3t-p@ss"


def files(**content: bytes):  # type: ignore[no-untyped-def]
    """A file reader over a dict of path → bytes; other paths do not exist."""

    def read(path: str) -> bytes:
        if path not in content:
            raise FileNotFoundError(2, "No such file or directory", path)
        return content[path]

    return read


def test_the_exact_file_names() -> None:
    assert (contract.SERVICEBUS_CONNECTION_STRING_FILE, contract.TEAMS_APP_PASSWORD_FILE,
            contract.DATABASE_URL_FILE) == ("DIGEST_SERVICEBUS_CONNECTION_STRING_FILE",
                                            "DIGEST_TEAMS_APP_PASSWORD_FILE", "DIGEST_DATABASE_URL_FILE")


def test_plain_variable_still_works_for_local_runs() -> None:
    assert secret({NAME: VALUE}, NAME, files()) == VALUE
    assert secret({}, NAME, files()) is None
    assert secret({NAME: "", f"{NAME}_FILE": ""}, NAME, files()) is None  # empty counts as unset


@pytest.mark.parametrize(("content", "expected"), [
    (b"s3cr3t-p@ss\n", VALUE),  # the one trailing newline `echo` / most editors add
    (b"s3cr3t-p@ss\r\n", VALUE),
    (b"s3cr3t-p@ss", VALUE),
    (b"s3cr3t-p@ss\n\n", "s3cr3t-p@ss\n"),  # only one newline is stripped
    (b" s3cr3t-p@ss \n", " s3cr3t-p@ss "),  # nothing else
    ("pässwörd\n".encode(), "pässwörd"),
])
def test_file_content_with_one_trailing_newline_stripped(content: bytes, expected: str) -> None:
    assert secret({f"{NAME}_FILE": "/run/secrets/pw"}, NAME, files(**{"/run/secrets/pw": content})) == expected


def test_both_set_is_an_error_naming_both_and_not_the_value() -> None:
    with pytest.raises(SecretError) as info:
        secret({NAME: VALUE, f"{NAME}_FILE": "/run/secrets/pw"}, NAME, files(**{"/run/secrets/pw": b"other"}))
    text = str(info.value)
    assert f"{NAME} and {NAME}_FILE are both set" in text
    assert VALUE not in text and "other" not in text


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read the file: No such file or directory"),
    (b"", "the file is empty"),
    (b"\n", "the file is empty"),
    (b"\xffs3cr3t-p@ss", "the file is not UTF-8 text"),
    (b"x" * (contract.MAX_SECRET_BYTES + 1), f"larger than {contract.MAX_SECRET_BYTES} bytes"),
])
def test_unusable_file_is_an_error_naming_variable_and_path_only(content: bytes | None, problem: str) -> None:
    read = files() if content is None else files(**{"/run/secrets/pw": content})
    with pytest.raises(SecretError) as info:
        secret({f"{NAME}_FILE": "/run/secrets/pw"}, NAME, read)
    assert str(info.value).startswith(f"{NAME}_FILE='/run/secrets/pw': ")
    assert problem in str(info.value)
    assert "s3cr3t" not in str(info.value) and "xxxx" not in str(info.value)


def test_default_reader_reads_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(VALUE + "\n")
    assert secret({f"{NAME}_FILE": str(path)}, NAME) == VALUE


def test_resolve_lists_every_problem_and_replaces_file_variables() -> None:
    environ = {
        contract.SERVICEBUS_CONNECTION_STRING_FILE: "/s/cs",
        contract.TEAMS_APP_PASSWORD: VALUE, contract.TEAMS_APP_PASSWORD_FILE: "/s/pw",
        contract.DATABASE_URL_FILE: "/s/missing",
        contract.SERVICEBUS_QUEUE: "digests",
    }
    resolved, problems = resolve_secrets(environ, files(**{"/s/cs": b"Endpoint=sb://x/;SharedAccessKey=k\n",
                                                          "/s/pw": b"pw"}))
    assert resolved == {contract.SERVICEBUS_CONNECTION_STRING: "Endpoint=sb://x/;SharedAccessKey=k",
                        contract.SERVICEBUS_QUEUE: "digests"}
    assert problems == [
        f"{contract.TEAMS_APP_PASSWORD} and {contract.TEAMS_APP_PASSWORD_FILE} are both set: set one of them",
        f"{contract.DATABASE_URL_FILE}='/s/missing': cannot read the file: No such file or directory",
    ]


def test_worker_config_reads_files_and_reports_conflicts_without_values(tmp_path: Path) -> None:
    from digest_worker.config import ConfigError, load

    (tmp_path / "cs").write_text("Endpoint=sb://127.0.0.1/;SharedAccessKeyName=k;SharedAccessKey=hunter2\n")
    (tmp_path / "db").write_text("postgresql://u:hunter3@db/digests\n")
    (tmp_path / "pw").write_text("hunter4\n")
    env = {contract.SERVICEBUS_QUEUE: "q", contract.TEAMS_APP_ID: "app",
           contract.SERVICEBUS_CONNECTION_STRING_FILE: str(tmp_path / "cs"),
           contract.DATABASE_URL_FILE: str(tmp_path / "db"), contract.TEAMS_APP_PASSWORD_FILE: str(tmp_path / "pw")}
    config = load(env)
    assert config.connection_string == "Endpoint=sb://127.0.0.1/;SharedAccessKeyName=k;SharedAccessKey=hunter2"
    assert config.database_url == "postgresql+asyncpg://u:hunter3@db/digests"
    assert config.teams_app_password == "hunter4"

    with pytest.raises(ConfigError) as info:
        load({**env, contract.DATABASE_URL: "postgresql://u:hunter5@db/x"})
    assert info.value.problems == [f"{contract.DATABASE_URL} and {contract.DATABASE_URL_FILE} are both set: "
                                   "set one of them"]
    (tmp_path / "db").write_text("mysql+pymysql://u:hunter3@db/digests\n")
    (tmp_path / "cs").write_text("no endpoint hunter2\n")
    with pytest.raises(ConfigError) as info:
        load(env)
    text = str(info.value)
    assert f"{contract.SERVICEBUS_CONNECTION_STRING}: (secret) has no Endpoint=" in text
    assert "unsupported database scheme 'mysql+pymysql'" in text
    assert not any(f"hunter{n}" in text for n in range(2, 6))


def test_worker_config_never_echoes_a_malformed_database_url() -> None:
    from digest_worker.config import ConfigError, load

    with pytest.raises(ConfigError) as info:  # no scheme: a password with '://' in it must not show up as one
        load({contract.SERVICEBUS_QUEUE: "q", contract.SERVICEBUS_NAMESPACE: "ns.servicebus.windows.net",
              contract.DATABASE_URL: "u:hunter6@db://x"})
    assert "unsupported database scheme (use" in str(info.value) and "hunter6" not in str(info.value)


def test_dlq_cli_reads_the_connection_string_file_and_refuses_both(tmp_path: Path) -> None:
    """`digestctl dlq` (and the monitor CronJob, which runs `digestctl dlq monitor`) takes the connection string
    from DIGEST_SERVICEBUS_CONNECTION_STRING_FILE; both set is a usage error naming both, never the value."""
    from digest_cli import main

    secret_file = tmp_path / "cs"
    secret_file.write_text("Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=k;SharedAccessKey=hunter7\n")
    runner = CliRunner()
    both = runner.invoke(main, ["dlq", "stats", "--queue", "q"], env={
        contract.SERVICEBUS_CONNECTION_STRING: "Endpoint=sb://127.0.0.1:1/;SharedAccessKey=hunter8",
        contract.SERVICEBUS_CONNECTION_STRING_FILE: str(secret_file)})
    assert both.exit_code == 2, both.output
    assert (f"{contract.SERVICEBUS_CONNECTION_STRING} and {contract.SERVICEBUS_CONNECTION_STRING_FILE} are both set"
            in both.output)
    missing = runner.invoke(main, ["dlq", "stats", "--queue", "q"], env={
        contract.SERVICEBUS_CONNECTION_STRING: None,
        contract.SERVICEBUS_CONNECTION_STRING_FILE: str(tmp_path / "absent")})
    assert missing.exit_code == 2 and "cannot read the file" in missing.output, missing.output
    for result in (both, missing):
        assert "hunter7" not in result.output and "hunter8" not in result.output
