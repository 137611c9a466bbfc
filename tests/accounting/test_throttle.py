from twisted.internet.task import Clock

from echod.accounting.throttle import Summary, WarningThrottle


def throttle(**kwargs):
    clock, reports = Clock(), []
    return WarningThrottle(clock, reports.append, interval=10, **kwargs), clock, reports


def test_the_first_is_let_through_and_the_rest_of_the_interval_is_summed_up_at_its_end():
    t, clock, reports = throttle()
    assert t.allow("a")
    clock.advance(9.999)
    assert [t.allow("a") for _ in range(2999)] == [False] * 2999
    assert reports == []
    clock.advance(0.001)
    assert reports == [Summary(count=2999, seconds=10, sources=1, top="a", top_count=2999)]
    assert reports[0].describe("bad requests") == "2,999 more bad requests from a in the last 10s"


def test_a_flood_that_goes_on_gets_one_summary_an_interval_and_no_line_in_full():
    t, clock, reports = throttle()
    assert t.allow()
    clock.advance(5)
    assert not t.allow()
    clock.advance(5)  # 10: the first summary
    assert not t.allow()  # still counted: the flood goes on
    clock.advance(10)  # 20
    assert [r.count for r in reports] == [1, 1]


def test_after_a_quiet_interval_the_next_is_let_through_again():
    t, clock, reports = throttle()
    assert t.allow()
    clock.advance(10)
    assert reports == []  # nothing held back, nothing to say
    assert t.allow()


def test_after_a_summary_and_then_a_quiet_interval_the_next_is_let_through_again():
    t, clock, reports = throttle()
    t.allow()
    t.allow()
    clock.advance(10)
    clock.advance(10)  # 20: this interval was quiet
    assert len(reports) == 1
    assert t.allow()


def test_flush_reports_what_is_held_back_now():
    t, clock, reports = throttle()
    t.allow("a")
    t.allow("a")
    clock.advance(2.5)
    t.flush()
    assert reports == [Summary(count=1, seconds=2.5, sources=1, top="a", top_count=1)]
    assert reports[0].describe("refusals") == "1 more refusals from a in the last 2.5s"
    assert not clock.getDelayedCalls()
    assert t.allow("a")


def test_sources_are_counted_apart_up_to_a_bound():
    t, clock, reports = throttle(max_sources=2)
    t.allow("first")
    for source in ["a", "b", "b", "c", "d"]:
        t.allow(source)
    clock.advance(10)
    (summary,) = reports
    assert (summary.count, summary.top, summary.top_count) == (5, "b", 2)
    assert summary.describe("drops") == "5 more drops from over 2 sources, 2 from b in the last 10s"


def test_several_sources_and_none():
    t, clock, reports = throttle()
    t.allow()
    t.allow("x")
    t.allow("y")
    t.allow("y")
    clock.advance(10)
    assert reports[0].describe("x") == "3 more x from 2 sources, 2 from y in the last 10s"
    t, clock, reports = throttle()
    t.allow()
    t.allow()
    clock.advance(10)
    assert reports[0].describe("datagrams dropped") == "1 more datagrams dropped in the last 10s"
