"""The load test's report from its samples: milestones, the summary rows, the live line and the timeline chart."""

from __future__ import annotations

import xml.dom.minidom

from digest_cluster.loadtest import Sample, live_line, milestones, summary, table, timeline_html


def _s(t: float, queue: int, desired: int, ready: int, delivered: int, dead: int = 0, posts: int | None = None
       ) -> Sample:
    return Sample(t=t, queue=queue, dead_letter=dead, desired=desired, ready=ready, delivered=delivered,
                  posts=delivered if posts is None else posts, requeued=0)


SAMPLES = [_s(0, 28, 0, 0, 0), _s(5, 28, 1, 0, 0), _s(9, 27, 1, 1, 1), _s(14, 12, 4, 2, 13, dead=2),
           _s(20, 0, 4, 4, 25, dead=3, posts=26), _s(40, 0, 4, 4, 25, dead=3, posts=26),
           _s(52, 0, 0, 0, 25, dead=3, posts=26)]


def test_milestones_are_the_first_samples_that_reach_them() -> None:
    marks = milestones(SAMPLES, requests=25, poison_count=3)
    assert (marks.first_replica_ready, marks.first_digest, marks.all_posted, marks.poison_dead_lettered,
            marks.peak_replicas, marks.back_to_zero) == (9, 9, 20, 20, 4, 52)
    # zero replicas before the first request was posted is not "back to zero"
    assert milestones(SAMPLES[:2], 25, 3).back_to_zero is None


def test_summary_counts_duplicates_and_groups_dead_letter_reasons() -> None:
    letters = [{"message_id": "p0", "reason": "Permanent.InvalidMessage", "description": "body: not JSON"},
               {"message_id": "p1", "reason": "Permanent.InvalidMessage", "description": "max_items"},
               {"message_id": "p2", "reason": "MaxDeliveryCountExceeded", "description": ""}]
    rows = dict(summary(SAMPLES, milestones(SAMPLES, 25, 3), 25, 3, letters))
    assert rows["digest requests"] == "25 sent, 25 posted, 1 duplicate posts"
    assert rows["dead-letter reasons"] == "MaxDeliveryCountExceeded x1, Permanent.InvalidMessage x2"
    assert rows["all 25 posted"] == "20.0 s" and rows["back to zero replicas"] == "52.0 s"
    assert rows["peak replicas"] == "4"
    assert all(line.startswith(("-", "digest", "poison", "dead", "first", "all", "peak", "back"))
               for line in table(list(rows.items())).splitlines())
    assert dict(summary([_s(0, 28, 0, 0, 0)], milestones([_s(0, 28, 0, 0, 0)], 25, 3), 25, 3, []))[
        "all 25 posted"] == "not reached"


def test_live_line_and_timeline_chart() -> None:
    assert live_line(SAMPLES[3], 25) == ("t=  14.0s  queue  12  replicas 2/4  delivered  13/25  dead-lettered 2  "
                                         "requeued 0")
    page = timeline_html(SAMPLES, milestones(SAMPLES, 25, 3), "Load test <x>")
    svg = page[page.index("<svg"):]
    document = xml.dom.minidom.parseString(svg)
    lines = document.getElementsByTagName("polyline")
    assert len(lines) == 3  # queue depth, replicas desired, replicas ready
    assert len(lines[0].getAttribute("points").split()) == len(SAMPLES)
    assert len(lines[1].getAttribute("points").split()) == 2 * len(SAMPLES) - 1  # a step line
    assert "Load test &lt;x&gt;" in page and "all posted 20 s" in page and "zero replicas 52 s" in page
