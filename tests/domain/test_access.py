"""API keys (parsing, lookup, errors that never show a key) and the role table."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyoza.v1 import access_pb2, definitions_pb2, runs_pb2, topics_pb2, workers_pb2
from gyoza_grpc.domain.access import (
    ApiKeys,
    KeysError,
    Role,
    parse_keys_file,
    parse_keys_list,
)
from gyoza_grpc.server.api import roles
from gyoza_grpc.server.api.auth import load_api_keys, presented_key

A = "a" * 16
B = "b-0123456789abcdef"


def test_a_keys_file_is_role_colon_key_per_line() -> None:
    text = f"# ops keys\n\nadmin:{A}\n  worker:{B}  \nREADER:key:with:colons:xyz\n"
    entries = parse_keys_file(text, "keys.txt")
    assert [(e.role, e.key, e.where) for e in entries] == [
        (Role.ADMIN, A, "keys.txt line 3"),
        (Role.WORKER, B, "keys.txt line 4"),
        (Role.READER, "key:with:colons:xyz", "keys.txt line 5"),
    ]


def test_the_env_list_is_comma_separated() -> None:
    entries = parse_keys_list(f"admin:{A}, reader:{B},", "GYOZA_API_KEYS")
    assert [(e.role, e.key) for e in entries] == [(Role.ADMIN, A), (Role.READER, B)]


@pytest.mark.parametrize(
    "line, message",
    [
        (f"{A}", "keys.txt line 1: expected ROLE:KEY (roles: admin, worker, reader)"),
        (f"root:{A}", "keys.txt line 1: unknown role 'root' (roles: admin, worker, reader)"),
        ("admin:short-secret", "keys.txt line 1: the key must be at least 16 characters"),
        (
            "admin:has a space in it!!",
            "keys.txt line 1: the key must be visible ASCII characters without spaces or commas",
        ),
        ("admin:", "keys.txt line 1: the key must be at least 16 characters"),
    ],
)
def test_a_bad_line_names_its_place_never_the_key(line: str, message: str) -> None:
    with pytest.raises(KeysError) as caught:
        parse_keys_file(line, "keys.txt")
    assert str(caught.value) == message
    assert A not in str(caught.value) and "short-secret" not in str(caught.value)


def test_a_key_given_twice_is_refused() -> None:
    entries = parse_keys_file(f"admin:{A}\nreader:{A}", "keys.txt")
    with pytest.raises(KeysError, match=r"^keys.txt line 2: the same key as keys.txt line 1$"):
        ApiKeys.of(entries)


def test_lookup_by_digest() -> None:
    keys = ApiKeys.of(parse_keys_list(f"admin:{A},reader:{B}", "env"))
    assert keys.role_of(A) is Role.ADMIN
    assert keys.role_of(B) is Role.READER
    assert keys.role_of(A[:-1]) is None
    assert keys.role_of("") is None
    assert keys.role_of("ключ-0123456789abcdef") is None
    assert all(A.encode() not in digest for digest, _ in keys.entries)  # digests only
    assert keys.summary() == "2 keys (admin 1, reader 1)"
    assert A not in repr(keys)
    assert not ApiKeys() and len(ApiKeys()) == 0


def test_load_api_keys_joins_the_file_and_the_env(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"worker:{A}\n")
    keys = load_api_keys(str(path), f"reader:{B}")
    assert (keys.role_of(A), keys.role_of(B)) == (Role.WORKER, Role.READER)
    assert load_api_keys("", "") == ApiKeys()
    with pytest.raises(OSError, match=r"^cannot read the API keys file .*missing: No such file"):
        load_api_keys(str(tmp_path / "missing"), "")


@pytest.mark.parametrize(
    "metadata, key",
    [
        ((), None),
        ((("x-api-key", A),), A),
        ((("authorization", f"Bearer {A}"),), A),
        ((("authorization", f"BEARER   {A} "),), A),
        ((("authorization", f"Basic {A}"),), ""),
        ((("authorization", "Bearer"),), ""),
        ((("x-api-key", B), ("authorization", f"Bearer {A}")), B),
        ((("authorization", f"Bearer {A}"), ("x-api-key", B)), B),
        ((("x-api-key", ""),), None),
    ],
)
def test_presented_key(metadata: tuple[tuple[str, str], ...], key: str | None) -> None:
    assert presented_key(metadata) == key


def test_every_method_is_classified_and_readers_only_read() -> None:
    services = [
        runs_pb2.DESCRIPTOR.services_by_name["RunService"],
        topics_pb2.DESCRIPTOR.services_by_name["TopicService"],
        workers_pb2.DESCRIPTOR.services_by_name["WorkerService"],
        definitions_pb2.DESCRIPTOR.services_by_name["DefinitionService"],
        access_pb2.DESCRIPTOR.services_by_name["AccessService"],
    ]
    every = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert every == roles.ALL_METHODS
    assert {m.rsplit("/", 1)[1] for m in roles.READER_METHODS} == {
        "GetRun",
        "ListRuns",
        "CountRuns",
        "ListEvents",
        "ListAttempts",
        "WatchEvents",
        "WatchRuns",
        "WatchTopic",
        "ListTopicEvents",
        "ListWorkers",
        "GetWorker",
        "GetDefinition",
        "ListDefinitions",
        "ListDefinitionVersions",
        "GetCaller",
    }
    assert {m.rsplit("/", 1)[1] for m in roles.WORKER_METHODS} == {
        "Heartbeat",
        "ClaimRuns",
        "WaitForStopOrders",
        "AddEvent",
        "GetRun",
        "ListEvents",
        "WatchEvents",
        "GetWorker",
        "ReleaseRun",
        "GetCaller",
    }
    assert every >= roles.WORKER_METHODS
    for method in every:
        assert roles.allows(Role.ADMIN, method)
        assert not roles.is_open(method)
    assert roles.allows(Role.ADMIN, "/gyoza.v1.RunService/NotYetWritten")
    assert not roles.allows(Role.READER, "/gyoza.v1.RunService/NotYetWritten")
    assert roles.is_open("/grpc.health.v1.Health/Check")
    assert roles.is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not roles.is_open("/grpc.health.v1.HealthX/Check")
