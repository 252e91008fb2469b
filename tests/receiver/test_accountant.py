from receiver.door.accountant import ConnectionCounts, HitCounter, RateTable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_counts_return_to_zero_and_forget_keys() -> None:
    counts = ConnectionCounts()
    for _ in range(3):
        counts.acquire("a")
    counts.acquire(None)
    assert (counts.total, counts.of("a")) == (4, 3)
    for _ in range(3):
        counts.release("a")
    counts.release(None)
    assert (counts.total, counts.of("a"), counts.keys_tracked) == (0, 0, 0)


def test_token_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    rates = RateTable(capacity=10, clock=clock)
    assert all(rates.take("k", 60) for _ in range(60))  # burst of one minute's worth
    assert not rates.take("k", 60)
    clock.now += 1.0  # 60/min = one token per second
    assert rates.take("k", 60)
    assert not rates.take("k", 60)


def test_zero_rate_means_unlimited() -> None:
    rates = RateTable(capacity=10, clock=Clock())
    assert all(rates.take("k", 0) for _ in range(10_000))
    assert len(rates) == 0


def test_rate_table_is_bounded() -> None:
    rates = RateTable(capacity=100, clock=Clock())
    for n in range(10_000):
        rates.take(f"k{n}", 10)
    assert len(rates) == 100


def test_hits_expire_with_the_window() -> None:
    clock = Clock()
    hits = HitCounter(window=60, capacity=100, clock=clock)
    assert [hits.hit("k") for _ in range(3)] == [1, 2, 3]
    clock.now += 61
    assert hits.hit("k") == 1
