"""State that replicas share: rate limits (the same contract in memory and in PostgreSQL)
and the lease that makes scheduled monitoring run on one replica at a time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alicerce.access.keys import ApiKey
from alicerce.errors import RateLimitError
from alicerce.server.limits import Limiter, RateLimiter, SharedRateLimiter
from alicerce.store.leases import Leases


def key(kid: str = "k1", rpm: int = 3, tpm: int = 100) -> ApiKey:
    return ApiKey(kid, "test", ("ask",), None, rpm, tpm, time.time())


class LimiterContract:
    """`pair` gives two limiters that must count as one: the same object in memory, two
    replicas' limiters on one database."""

    @pytest.fixture
    def pair(self) -> Iterator[tuple[Limiter, Limiter]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_requests_per_minute_are_counted_together(
            self, pair: tuple[Limiter, Limiter]) -> None:
        one, two = pair
        k = key(rpm=3)
        one.admit(k)
        two.admit(k)
        one.admit(k)
        with pytest.raises(RateLimitError, match="3 requests per minute") as refused:
            two.admit(k)
        assert 0 < refused.value.retry_after <= 60
        one.admit(key("other", rpm=3))  # another key has its own window

    def test_tokens_spent_on_one_limit_the_other(self, pair: tuple[Limiter, Limiter]) -> None:
        one, two = pair
        k = key(rpm=100, tpm=100)
        assert two.wait_s(k) == 0.0
        one.admit(k)
        one.spend(k, 60)
        two.admit(k)  # 60 < 100: still admitted
        two.spend(k, 50)
        with pytest.raises(RateLimitError, match="100 tokens per minute"):
            one.admit(k)
        assert 0 < two.wait_s(k) <= 60


class TestMemoryLimiter(LimiterContract):
    @pytest.fixture
    def pair(self) -> Iterator[tuple[Limiter, Limiter]]:
        limiter = RateLimiter()
        yield limiter, limiter


class TestSharedLimiter(LimiterContract):
    @pytest.fixture
    def pair(self, pg_url: str) -> Iterator[tuple[Limiter, Limiter]]:
        one, two = SharedRateLimiter(pg_url), SharedRateLimiter(pg_url)
        yield one, two
        one.close()
        two.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_lease_has_one_holder_until_it_expires(backend: str, tmp_path: Path,
                                                 request: pytest.FixtureRequest) -> None:
    target: Path | str = (tmp_path / "h.db" if backend == "sqlite"
                          else request.getfixturevalue("pg_url"))
    one, two = Leases(target), Leases(target)
    assert one.take("monitor", 0.5) and not two.take("monitor", 0.5)
    assert one.take("monitor", 0.5)  # the holder renews
    assert two.take("other", 0.5)  # leases are by name
    time.sleep(0.6)  # the holder stopped renewing: the lease moves
    assert two.take("monitor", 0.5) and not one.take("monitor", 0.5)
    one.close()
    two.close()


def test_a_replica_resumes_only_its_own_upload_jobs(pg_url: str, tmp_path: Path) -> None:
    from alicerce.ingest.jobs import IngestJobs

    one, two = IngestJobs(pg_url, tmp_path / "one"), IngestJobs(pg_url, tmp_path / "two")
    job = one.create("k1", "kb", [("a.txt", b"alpha")])
    one.start(job.id)  # running on replica one when replica two starts
    assert two.recover() == [] and two.get(job.id).state == "running"
    assert [j.id for j in one.recover()] == [job.id]  # one restarted: it picks it up
    one.close()
    two.close()
