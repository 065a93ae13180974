"""open_store: URL schemes, paths and options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trustwire.errors import ConfigurationError
from trustwire.store import AgentDirectory, DeliveryQueue, open_store, supported_schemes
from trustwire.store.memory import MemoryDeliveryQueue
from trustwire.store.sqlite import SqliteDeliveryQueue


def exists(path: Path) -> bool:
    return path.exists()


def test_supported_schemes_are_memory_and_sqlite() -> None:
    assert supported_schemes() == ["memory", "sqlite"]


async def test_memory_url_opens_a_memory_store() -> None:
    async with await open_store("memory://") as store:
        assert isinstance(store.agents, AgentDirectory)
        assert isinstance(store.queue, MemoryDeliveryQueue)


async def test_absolute_sqlite_url_opens_that_file(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    async with await open_store(f"sqlite://{path}") as store:
        assert isinstance(store.queue, SqliteDeliveryQueue)
        assert isinstance(store.queue, DeliveryQueue)
    assert exists(path)


async def test_relative_sqlite_url_opens_a_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with await open_store("sqlite:relative.db"):
        pass
    assert exists(tmp_path / "relative.db")


async def test_percent_encoded_sqlite_paths_are_decoded(tmp_path: Path) -> None:
    async with await open_store(f"sqlite://{tmp_path}/with%20space.db"):
        pass
    assert exists(tmp_path / "with space.db")


async def test_an_unknown_scheme_names_it_and_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        await open_store("redis://user:hunter2@cache:6379/0")
    text = str(caught.value)
    assert "'redis'" in text
    assert "memory, sqlite" in text
    # URLs of later backends carry passwords; errors must not repeat them.
    assert "hunter2" not in text


@pytest.mark.parametrize("url", ["", "store.db", "/var/lib/store.db"])
async def test_a_url_without_a_scheme_is_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unsupported store URL scheme"):
        await open_store(url)


async def test_a_malformed_url_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="malformed"):
        await open_store("sqlite://[oops/store.db")


@pytest.mark.parametrize(
    "url",
    ["sqlite://host/store.db", "sqlite:", "sqlite:///", "sqlite:///tmp/dir/", "sqlite:x.db#frag"],
)
async def test_malformed_sqlite_urls_are_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match="sqlite"):
        await open_store(url)


@pytest.mark.parametrize("url", ["memory://somewhere", "memory:///path", "memory://?x=1"])
async def test_memory_urls_take_no_location(url: str) -> None:
    with pytest.raises(ConfigurationError, match="memory"):
        await open_store(url)


async def test_unknown_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown memory store option.*colour"):
        await open_store("memory://", colour="blue")
    with pytest.raises(ConfigurationError, match=r"unknown sqlite store option.*journal"):
        await open_store(f"sqlite://{tmp_path}/s.db?journal=off")
    assert not exists(tmp_path / "s.db")


async def test_synchronous_may_come_from_the_url_or_an_argument(tmp_path: Path) -> None:
    async with await open_store(f"sqlite://{tmp_path}/a.db?synchronous=full"):
        pass
    async with await open_store(f"sqlite://{tmp_path}/b.db", synchronous="FULL"):
        pass
    with pytest.raises(ConfigurationError, match="given in the URL and as argument"):
        await open_store(f"sqlite://{tmp_path}/c.db?synchronous=FULL", synchronous="FULL")
    with pytest.raises(ConfigurationError, match="given twice"):
        await open_store(f"sqlite://{tmp_path}/c.db?synchronous=FULL&synchronous=NORMAL")


@pytest.mark.parametrize("value", ["OFF", "", 2])
async def test_a_bad_synchronous_value_is_rejected(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigurationError, match="synchronous must be one of FULL, NORMAL"):
        await open_store(f"sqlite://{tmp_path}/s.db", synchronous=value)


@pytest.mark.parametrize("retention", [-1.0, math.nan, math.inf, True, "60"])
async def test_a_bad_dedup_retention_is_rejected(retention: object) -> None:
    with pytest.raises(ConfigurationError, match="dedup_retention"):
        await open_store("memory://", dedup_retention=retention)  # type: ignore[arg-type]


async def test_a_url_that_is_not_a_string_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="must be a string"):
        await open_store(b"memory://")  # type: ignore[arg-type]
