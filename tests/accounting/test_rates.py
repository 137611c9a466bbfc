"""Token buckets, one for a flow or one per source host (L{echod.accounting.rates})."""

from echod.accounting.rates import PeerBuckets, TokenBucket


def test_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1)  # one token back after 1/10 s
    assert not bucket.take(0.1)


def test_bucket_never_saves_more_than_the_burst():
    bucket = TokenBucket(rate=10, burst=2, now=0.0)
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]


def test_bucket_spends_amounts():
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert bucket.take(0.0, 60)
    assert not bucket.take(0.0, 60)


def test_each_peer_has_its_own_bucket():
    peers = PeerBuckets(rate=1)
    assert peers.take("192.0.2.1", 0.0)
    assert not peers.take("192.0.2.1", 0.0)
    assert peers.take("192.0.2.2", 0.0)


def test_peer_table_is_bounded_and_forgets_the_least_recent():
    peers = PeerBuckets(rate=1, limit=2)
    peers.take("a", 0.0)
    peers.take("b", 0.0)
    peers.take("a", 0.0)  # a is now more recent than b
    peers.take("c", 0.0)
    assert len(peers) == 2
    assert peers.take("b", 0.0)  # b was forgotten: a fresh bucket (and a is forgotten now)
    assert len(peers) == 2
    assert not peers.take("c", 0.0)  # c is still remembered, its token spent
    assert peers.take("a", 0.0)
