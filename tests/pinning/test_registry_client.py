"""The OCI distribution client against a real registry (Debian's docker-registry) on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest_api.imageref import parse_image
from digest_operator.registry import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    Credentials,
    RegistryClient,
    RegistryError,
    split_name,
)
from tests.support.registry import PASSWORD, USER, Registry, StrippingProxy


async def _resolve(registry: Registry, reference: str, credentials: Credentials | None = None) -> str:
    client = RegistryClient(insecure_hosts={registry.host}, timeout=5)
    try:
        return (await client.resolve(parse_image(reference), credentials)).digest
    finally:
        await client.close()


async def test_resolves_a_single_platform_tag(registry: Registry) -> None:
    digest = await registry.push_image("team/worker", "1.0")
    assert await _resolve(registry, f"{registry.host}/team/worker:1.0") == digest


async def test_resolves_a_docker_v2_manifest(registry: Registry) -> None:
    digest = await registry.push_image("team/worker", "docker", media_type=DOCKER_MANIFEST)
    assert await _resolve(registry, f"{registry.host}/team/worker:docker") == digest


async def test_multi_arch_is_pinned_at_the_index_digest(registry: Registry) -> None:
    index, platforms = await registry.push_index("team/worker", "multi")
    client = RegistryClient(insecure_hosts={registry.host})
    try:
        resolved = await client.resolve(parse_image(f"{registry.host}/team/worker:multi"))
    finally:
        await client.close()
    assert resolved.digest == index
    assert resolved.digest not in platforms
    assert (resolved.media_type, resolved.multi_arch) == (OCI_INDEX, True)


async def test_docker_manifest_list_is_pinned_at_the_list_digest(registry: Registry) -> None:
    index, _ = await registry.push_index("team/worker", "list", media_type=DOCKER_MANIFEST_LIST)
    assert await _resolve(registry, f"{registry.host}/team/worker:list") == index


async def test_missing_digest_header_falls_back_to_get_and_sha256(registry: Registry) -> None:
    index, _ = await registry.push_index("team/worker", "multi")
    proxy = await StrippingProxy(registry.url).start()
    client = RegistryClient(insecure_hosts={proxy.host})
    try:
        resolved = await client.resolve(parse_image(f"{proxy.host}/team/worker:multi"))
    finally:
        await client.close()
        await proxy.stop()
    assert (resolved.digest, resolved.media_type) == (index, OCI_INDEX)
    assert proxy.methods == ["HEAD", "GET"]


async def test_moved_tag_resolves_to_the_new_digest(registry: Registry) -> None:
    first = await registry.push_image("team/worker", "stable", content="v1")
    second = await registry.push_image("team/worker", "stable", content="v2")
    assert first != second
    assert await _resolve(registry, f"{registry.host}/team/worker:stable") == second


async def test_unknown_tag_and_repository_are_tag_not_found(registry: Registry) -> None:
    await registry.push_image("team/worker", "1.0")
    for reference in ("team/worker:nope", "team/absent:1.0"):
        with pytest.raises(RegistryError) as info:
            await _resolve(registry, f"{registry.host}/{reference}")
        assert info.value.reason == "TagNotFound"


async def test_stopped_registry_is_unavailable(registry: Registry) -> None:
    await registry.push_image("team/worker", "1.0")
    registry.stop_process()
    with pytest.raises(RegistryError) as info:
        await _resolve(registry, f"{registry.host}/team/worker:1.0")
    assert info.value.reason == "RegistryUnavailable"


async def test_basic_auth(basic_registry: Registry) -> None:
    digest = await basic_registry.push_image("team/worker", "1.0")
    reference = f"{basic_registry.host}/team/worker:1.0"
    assert await _resolve(basic_registry, reference, Credentials(USER, PASSWORD)) == digest
    for credentials in (None, Credentials(USER, "wrong")):
        with pytest.raises(RegistryError) as info:
            await _resolve(basic_registry, reference, credentials)
        assert info.value.reason == "Unauthorized"
        assert "wrong" not in info.value.message


async def test_bearer_token_flow(token_registry: Registry) -> None:
    index, _ = await token_registry.push_index("team/worker", "multi")
    reference = f"{token_registry.host}/team/worker:multi"
    assert await _resolve(token_registry, reference, Credentials(USER, PASSWORD)) == index
    assert token_registry.token_server is not None
    assert "repository:team/worker:pull" in token_registry.token_server.scopes
    with pytest.raises(RegistryError) as info:
        await _resolve(token_registry, reference, Credentials(USER, "wrong"))
    assert info.value.reason == "Unauthorized"


async def test_https_registry_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    from digest_operator import certs

    files = certs.ensure(tmp_path / "tls", ["127.0.0.1"])
    (tmp_path / "data").mkdir()
    server = await Registry(tmp_path / "data", tls=(files.cert, files.key)).start()
    try:
        digest = await server.push_image("team/worker", "1.0")
        image = parse_image(f"{server.host}/team/worker:1.0")
        trusting = RegistryClient(ca_file=str(files.ca))
        untrusting = RegistryClient()
        try:
            assert (await trusting.resolve(image)).digest == digest  # HTTPS: not an insecure host
            with pytest.raises(RegistryError) as info:
                await untrusting.resolve(image)  # an unknown CA is never silently accepted
            assert info.value.reason == "RegistryUnavailable" and "certificate" in info.value.message.lower()
        finally:
            await trusting.close()
            await untrusting.close()
    finally:
        await server.close()


def test_split_name_applies_docker_hub_defaults() -> None:
    assert split_name("busybox") == ("docker.io", "library/busybox")
    assert split_name("docker.io/team/app") == ("docker.io", "team/app")
    assert split_name("team/app") == ("docker.io", "team/app")
    assert split_name("localhost/app") == ("localhost", "app")
    assert split_name("registry.example.com:5000/a/b") == ("registry.example.com:5000", "a/b")
