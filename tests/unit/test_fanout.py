"""The event hub's fan-out without a kernel: filters, per-subscriber queues, loss accounting,
aggregation of repeated denials (`netns_lab.lab.fanout`).

    hub ──event──> Fanout ──filter──> queue A (limit) ──take──> subscriber A
                     │        └─────> queue B ...
                  kernel losses ────> every subscriber present
"""

from __future__ import annotations

from typing import Any

import pytest

from netns_lab.lab import fanout

DENY = {
    "time": 1.0,
    "vm": "app1",
    "nic": "app1.eth1",
    "port": "app1-1",
    "direction": "out",
    "verdict": "deny",
    "reason": "policy",
    "rule": "default",
    "proto": "tcp",
    "src": "10.40.0.21",
    "dst": "10.40.0.31",
    "sport": 40000,
    "dport": 22,
    "icmp_type": None,
    "icmp_id": None,
}  # fmt: skip (as fwlive.decode makes it)
ALLOW = {
    **DENY,
    "vm": "db1",
    "nic": "db1.eth0",
    "port": "db1-0",
    "verdict": "allow",
    "reason": "new-flow",
    "rule": 30,
}
PING = {**DENY, "proto": "icmp", "sport": None, "dport": None, "icmp_type": 8}


def deny(sport: int, **other: Any) -> dict[str, Any]:
    return {**DENY, "sport": sport, **other}


def drain(sub: fanout.Subscriber) -> list[dict[str, Any]]:
    return sub.take(1 << 30)


def verdicts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "verdict"]


def lost(records: list[dict[str, Any]]) -> int:
    return sum(r["count"] for r in records if r["kind"] == "lost")


def test_every_subscriber_gets_every_event_its_filter_keeps() -> None:
    hub = fanout.Fanout()
    everything = hub.join(1, fanout.Filter())
    denials = hub.join(2, fanout.Filter(denied=True))
    db1 = hub.join(3, fanout.Filter(frozenset({"db1"})))
    for i in range(100):
        hub.event(deny(10000 + i), 5, now=0.0)
    hub.event(ALLOW, 5, now=0.0)
    got = {key: drain(sub) for key, sub in ((1, everything), (2, denials), (3, db1))}
    assert [len(verdicts(got[k])) for k in (1, 2, 3)] == [101, 100, 1]
    assert [r["sport"] for r in verdicts(got[2])] == list(range(10000, 10100))  # in order
    assert verdicts(got[3]) == [{"kind": "verdict", **ALLOW, "count": 1}]
    assert all(lost(got[k]) == 0 and s.lost == 0 for k, s in ((1, everything), (2, denials), (3, db1)))


def test_a_full_queue_drops_for_its_subscriber_only_and_says_how_many() -> None:
    hub = fanout.Fanout()
    slow, fast = hub.join(1, fanout.Filter(), limit=8), hub.join(2, fanout.Filter())
    for i in range(50):
        hub.event(deny(10000 + i), 5, now=0.0)
    assert (slow.dropped, slow.lost, fast.lost) == (42, 42, 0)
    records = drain(slow)
    for i in range(50, 53):  # the loss is reported before the first event that fits again
        hub.event(deny(10000 + i), 5, now=0.0)
    records += drain(slow)
    assert [r["sport"] for r in verdicts(records)] == [*range(10000, 10008), *range(10050, 10053)]
    assert lost(records) == 42 and len(verdicts(records)) + lost(records) == 53
    losses = [r for r in records if r["kind"] == "lost"]
    assert [(r["source"], r["where"], r["count"], r["total"]) for r in losses] == [
        ("firewall", "subscriber queue", 42, 42)
    ]
    assert records.index(losses[0]) == 8, "the loss stands where the events went missing"
    assert len(verdicts(drain(fast))) == 53


def test_a_loss_is_reported_once_room_is_made_even_without_a_new_event() -> None:
    hub = fanout.Fanout()
    sub = hub.join(1, fanout.Filter(), limit=2)
    for i in range(5):
        hub.event(deny(10000 + i), 5, now=0.0)
    first = sub.take(2)  # taking makes room: the loss follows at once
    assert len(verdicts(first)) == 2 and lost(first) == 0
    assert lost(drain(sub)) == 3 and sub.lost == 3


def test_a_subscriber_asking_for_everything_hears_of_its_drops_even_with_a_full_queue() -> None:
    hub = fanout.Fanout()
    sub = hub.join(1, fanout.Filter(), limit=2)
    for i in range(5):
        hub.event(deny(10000 + i), 5, now=0.0)
    sub.report_drops(now=True)  # what a sync does
    records = list(sub.queue)
    assert len(verdicts(records)) == 2 and lost(records) == 3 and records[-1]["kind"] == "lost"


def test_kernel_losses_reach_the_subscribers_present_whatever_their_filter() -> None:
    hub = fanout.Fanout()
    early = hub.join(1, fanout.Filter(frozenset({"web1"})))
    hub.kernel_lost(7)
    late = hub.join(2, fanout.Filter(denied=True))
    hub.kernel_lost(3)
    hub.leave(1)
    hub.kernel_lost(100)  # nobody but `late` is there to miss it
    assert (early.lost, early.kernel_lost, late.lost) == (10, 10, 103)
    records = drain(late)
    assert [(r["where"], r["count"], r["total"]) for r in records] == [
        ("ring buffer", 3, 3),
        ("ring buffer", 100, 103),
    ]


def test_a_subscriber_does_not_get_events_from_before_it_came() -> None:
    hub = fanout.Fanout()
    sub = hub.join(1, fanout.Filter(), since_ns=1000)
    hub.event(deny(1), 999, now=0.0)
    hub.event(deny(2), 1000, now=0.0)
    assert [r["sport"] for r in verdicts(drain(sub))] == [2] and sub.lost == 0


def test_repeated_denials_of_a_flow_become_one_record_with_a_count() -> None:
    hub = fanout.Fanout(fanout.Aggregator(window=1.0))
    sub = hub.join(1, fanout.Filter())
    for i in range(20000):  # a flood of one flow, 0.1 ms apart: 2 s
        hub.event(deny(40000, time=i), 5, now=i / 10000)
        hub.tick(i / 10000)
    hub.event(deny(40001), 5, now=1.5)  # another flow in the middle: shown at once
    hub.event(ALLOW, 5, now=1.5)  # allowed new flows are never aggregated
    hub.tick(3.0)
    records = verdicts(drain(sub))
    flood = [r for r in records if r["sport"] == 40000 and r["verdict"] == "deny"]
    # first at once, then each window's others as one record (with the last one's fields)
    assert [r["count"] for r in flood] == [1, 9999, 1, 9999]
    assert sum(r["count"] for r in flood) == 20000
    assert [r["time"] for r in flood] == [0, 9999, 10000, 19999]
    assert [r["count"] for r in records if r["sport"] == 40001] == [1]
    assert [r["verdict"] for r in records].count("allow") == 1


def test_aggregation_windows_are_per_flow_and_bounded() -> None:
    agg = fanout.Aggregator(window=1.0, capacity=2)
    assert len(agg.add(deny(1), 0, 0.0)) == len(agg.add(deny(2), 0, 0.0)) == 1
    assert len(agg.add(deny(1, direction="in"), 0, 0.0)) == 1  # no room for a third window
    assert len(agg.add(deny(1, direction="in"), 0, 0.1)) == 1  # so each goes out on its own
    assert agg.add(deny(1), 0, 0.5) == [] and len(agg.add(deny(2, dport=23), 0, 0.5)) == 1
    assert agg.expired(0.99) == []
    assert [(r["sport"], r["count"]) for r, _ in agg.expired(1.0)] == [(1, 1)]  # 2 aggregated nothing
    agg.add(deny(3), 0, 2.0)
    agg.add(deny(3), 0, 2.5)
    closed_by_the_next = agg.add(deny(3), 0, 3.0)  # a window no tick closed yet closes first
    assert [(r["sport"], r["count"]) for r, _ in closed_by_the_next] == [(3, 1), (3, 1)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"vms": "web1"}, "vms: 'web1' is not a list of VM names"),
        ({"denied": "yes"}, "denied: 'yes' is not true or false"),
    ],
)
def test_bad_subscriptions_are_refused_naming_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fanout.Filter.from_doc(doc)
    with pytest.raises(ValueError, match="queue: 0 is not in"):
        fanout.Fanout().join(1, fanout.Filter(), limit=0)
    assert fanout.Filter.from_doc(fanout.Filter(frozenset({"a"}), True).doc()) == fanout.Filter(
        frozenset({"a"}), True
    )


def test_denied_pings_of_two_identifiers_are_two_flows() -> None:
    """An ICMP query's identifier is in `icmp_id` (its ports are null): it must key the window."""
    hub = fanout.Fanout()
    sub = hub.join(1, fanout.Filter())
    for ident in (7, 8, 7):
        hub.event({**PING, "icmp_id": ident}, 5, now=0.0)
    hub.tick(now=3.0)
    got = verdicts(drain(sub))
    assert sorted((r["icmp_id"], r["count"]) for r in got) == [(7, 1), (7, 1), (8, 1)]
