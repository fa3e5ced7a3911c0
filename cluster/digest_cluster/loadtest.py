"""The team's load test against a pipeline in the local cluster: N digest requests plus a few poison messages on
the queue, then one sample a second until every request is posted, the poison is dead-lettered and KEDA has
scaled the workers back to zero.

Pure: `milestones`, `summary`, `live_line`, `timeline_html` (from the samples). I/O: `send`, `Probe.sample`,
`dead_letters` and `run`, which writes `samples.json`, `summary.json` and `timeline.html` into the output folder.
"""

from __future__ import annotations

import html
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageProperties
from azure.servicebus.management import ServiceBusAdministrationClient

from digest_cluster.cluster import Cluster
from digest_cluster.install import get
from digest_cluster.services import Emulator, Teams
from digest_worker.producer import poison, request_body

POISON_KINDS = ("not_json", "wrong_type", "out_of_range")
"""One of each poison message kind, in turn (each gets its own precise dead-letter reason)."""


@dataclass(frozen=True)
class Sample:
    t: float
    """Seconds since the messages were sent."""
    queue: int
    """Active messages in the queue (what KEDA scales on)."""
    dead_letter: int
    desired: int
    """The worker Deployment's spec.replicas (KEDA and the HPA write it)."""
    ready: int
    delivered: int
    """Requests of this run posted into Teams (distinct)."""
    posts: int
    """Posts of this run's requests (a duplicate counts twice)."""
    requeued: int
    """status.deadLetter.lastRun.requeued of the pipeline."""


@dataclass(frozen=True)
class Milestones:
    first_replica_ready: float | None
    first_digest: float | None
    all_posted: float | None
    poison_dead_lettered: float | None
    peak_replicas: int
    back_to_zero: float | None


@dataclass(frozen=True)
class Run:
    run_id: str
    conversation: str
    requests: list[str]
    poison: list[str]


def milestones(samples: Sequence[Sample], requests: int, poison_count: int) -> Milestones:
    def first(predicate: Callable[[Sample], bool], after: float = -1.0) -> float | None:
        return next((s.t for s in samples if s.t >= after and predicate(s)), None)

    posted = first(lambda s: s.delivered >= requests)
    return Milestones(
        first_replica_ready=first(lambda s: s.ready > 0),
        first_digest=first(lambda s: s.delivered > 0),
        all_posted=posted,
        poison_dead_lettered=first(lambda s: s.dead_letter >= poison_count),
        peak_replicas=max((s.desired for s in samples), default=0),
        back_to_zero=None if posted is None else first(lambda s: s.desired == 0, posted),
    )


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def summary(samples: Sequence[Sample], marks: Milestones, requests: int, poison_count: int,
            dead_letters: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """The rows of the summary table (label, value)."""
    last = samples[-1] if samples else None
    posts = last.posts if last else 0
    delivered = last.delivered if last else 0
    reasons: dict[str, int] = {}
    for letter in dead_letters:
        reasons[letter["reason"]] = reasons.get(letter["reason"], 0) + 1
    return [
        ("digest requests", f"{requests} sent, {delivered} posted, {posts - delivered} duplicate posts"),
        ("poison messages", f"{poison_count} sent, {len(dead_letters)} dead-lettered"),
        ("dead-letter reasons", ", ".join(f"{r} x{n}" for r, n in sorted(reasons.items())) or "none"),
        ("first replica Ready", _seconds(marks.first_replica_ready)),
        ("first digest posted", _seconds(marks.first_digest)),
        (f"all {requests} posted", _seconds(marks.all_posted)),
        ("peak replicas", str(marks.peak_replicas)),
        ("back to zero replicas", _seconds(marks.back_to_zero)),
    ]


def live_line(sample: Sample, requests: int) -> str:
    return (f"t={sample.t:6.1f}s  queue {sample.queue:3d}  replicas {sample.ready}/{sample.desired}  "
            f"delivered {sample.delivered:3d}/{requests}  dead-lettered {sample.dead_letter}  "
            f"requeued {sample.requeued}")


def timeline_html(samples: Sequence[Sample], marks: Milestones, title: str) -> str:
    """A self-contained page: queue depth and replicas over time (SVG), the milestones marked."""
    width, height, pad = 900, 360, 48
    end = max((s.t for s in samples), default=1.0) or 1.0
    top_queue = max((s.queue for s in samples), default=1) or 1
    top_replicas = max((max(s.desired, s.ready) for s in samples), default=1) or 1

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / end

    def y(value: float, top: float) -> float:
        return height - pad - (height - 2 * pad) * value / top

    def line(values: Sequence[tuple[float, float]], top: float, colour: str, step: bool) -> str:
        points: list[str] = []
        for i, (t, v) in enumerate(values):
            if step and i:
                points.append(f"{x(t):.1f},{y(values[i - 1][1], top):.1f}")
            points.append(f"{x(t):.1f},{y(v, top):.1f}")
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>'

    parts = [
        line([(s.t, s.queue) for s in samples], top_queue, "#1f77b4", False),
        line([(s.t, s.desired) for s in samples], top_replicas, "#d62728", True),
        line([(s.t, s.ready) for s in samples], top_replicas, "#ff9896", True),
    ]
    for label, at in (("first digest", marks.first_digest), ("all posted", marks.all_posted),
                      ("zero replicas", marks.back_to_zero)):
        if at is not None:
            parts.append(f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{pad}" y2="{height - pad}" '
                         f'stroke="#888" stroke-dasharray="4 3"/><text x="{x(at) + 3:.1f}" y="{pad + 12}" '
                         f'font-size="11">{html.escape(label)} {at:.0f} s</text>')
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#000"/>'
            f'<text x="{width / 2}" y="{height - 12}" font-size="12" text-anchor="middle">seconds since sent '
            f'(0-{end:.0f})</text><text x="8" y="{pad - 12}" font-size="12" fill="#1f77b4">queue depth '
            f'(max {top_queue})</text><text x="{width - 8}" y="{pad - 12}" font-size="12" fill="#d62728" '
            f'text-anchor="end">replicas desired / ready (max {top_replicas})</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif">{axes}{"".join(parts)}</svg>')
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<h1 style='font-family:sans-serif'>{html.escape(title)}</h1>{svg}")


# --- I/O -----------------------------------------------------------------------------------------------------------


def send(emulator: Emulator, queue: str, conversation: str, requests: int, poison_count: int) -> Run:
    """Put the requests (title = request id) and the poison messages on the queue."""
    run_id = uuid.uuid4().hex[:8]
    ids = [f"{run_id}-{i:03d}" for i in range(requests)]
    bad = [f"{run_id}-poison-{i}" for i in range(poison_count)]
    with ServiceBusClient.from_connection_string(emulator.connection_string) as client, \
            client.get_queue_sender(queue) as sender:
        sender.send_messages([ServiceBusMessage(request_body(i, conversation, title=i), message_id=i,
                                                content_type="application/json") for i in ids])
        if bad:
            sender.send_messages([AmqpAnnotatedMessage(
                **poison(POISON_KINDS[n % len(POISON_KINDS)], message_id, conversation),
                properties=AmqpMessageProperties(message_id=message_id)) for n, message_id in enumerate(bad)])
    return Run(run_id, conversation, ids, bad)


class Probe:
    """Reads one `Sample`: the queue's runtime counts, the worker Deployment, the local Teams' record, the pipeline."""

    def __init__(self, cluster: Cluster, emulator: Emulator, teams: Teams, namespace: str, pipeline: str,
                 queue: str, run: Run) -> None:
        self.cluster, self.teams, self.namespace, self.pipeline, self.queue, self.run = (
            cluster, teams, namespace, pipeline, queue, run)
        self.admin = ServiceBusAdministrationClient.from_connection_string(
            emulator.connection_string, connection_verify=str(emulator.ca_file))
        self.started = time.monotonic()
        self._wanted = set(run.requests)

    def close(self) -> None:
        self.admin.close()

    def sample(self) -> Sample:
        counts = self.admin.get_queue_runtime_properties(self.queue)
        deployment = get(self.cluster, "deployment", f"{self.pipeline}-worker", "-n", self.namespace) or {}
        pipeline = get(self.cluster, "dgp", self.pipeline, "-n", self.namespace) or {}
        titles = [str(card.get("title")) for d in self.teams.delivered()
                  if d.get("conversation_id") == self.run.conversation and isinstance(card := d.get("card"), dict)]
        ours = [t for t in titles if t in self._wanted]
        last_run = ((pipeline.get("status") or {}).get("deadLetter") or {}).get("lastRun") or {}
        return Sample(
            t=round(time.monotonic() - self.started, 1), queue=int(counts.active_message_count or 0),
            dead_letter=int(counts.dead_letter_message_count or 0),
            desired=int((deployment.get("spec") or {}).get("replicas", 0)),
            ready=int((deployment.get("status") or {}).get("readyReplicas", 0)),
            delivered=len(set(ours)), posts=len(ours), requeued=int(last_run.get("requeued", 0)))


def dead_letters(emulator: Emulator, queue: str) -> list[dict[str, str]]:
    """Every message in the queue's dead-letter queue: id, reason, description."""
    found: list[dict[str, str]] = []
    with ServiceBusClient.from_connection_string(emulator.connection_string) as client, \
            client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        sequence = 0
        while page := receiver.peek_messages(max_message_count=100, sequence_number=sequence):
            for message in page:
                found.append({"message_id": str(message.message_id), "reason": str(message.dead_letter_reason),
                              "description": str(message.dead_letter_error_description)})
            sequence = max(int(m.sequence_number or 0) for m in page) + 1
    return found


@dataclass(frozen=True)
class Result:
    run: Run
    samples: list[Sample]
    milestones: Milestones
    dead_letters: list[dict[str, str]]
    summary: list[tuple[str, str]]
    output: Path


def run(cluster: Cluster, emulator: Emulator, teams: Teams, *, namespace: str, pipeline: str, queue: str,
        conversation: str, requests: int, poison_count: int, output: Path, within: float = 600,
        live: Callable[[str], None] = lambda line: None, until_zero: bool = True) -> Result:
    """Send, sample every second until done (all posted, poison dead-lettered, and with `until_zero` the workers
    scaled back to zero) or `within`, and write the report files into `output`."""
    sent = send(emulator, queue, conversation, requests, poison_count)
    probe = Probe(cluster, emulator, teams, namespace, pipeline, queue, sent)
    samples: list[Sample] = []
    try:
        deadline = time.monotonic() + within
        while True:
            sample = probe.sample()
            samples.append(sample)
            live(live_line(sample, requests))
            done = sample.delivered >= requests and sample.dead_letter >= poison_count and (
                sample.desired == 0 or not until_zero)
            if done or time.monotonic() > deadline:
                break
            time.sleep(max(0.0, 1.0 - (time.monotonic() - probe.started - sample.t)))
    finally:
        probe.close()
    marks = milestones(samples, requests, poison_count)
    letters = [d for d in dead_letters(emulator, queue) if d["message_id"] in set(sent.poison)]
    rows = summary(samples, marks, requests, poison_count, letters)
    output.mkdir(parents=True, exist_ok=True)
    (output / "samples.json").write_text(json.dumps([asdict(s) for s in samples]))
    (output / "summary.json").write_text(json.dumps({
        "run": asdict(sent), "milestones": asdict(marks), "deadLetters": letters, "summary": dict(rows)}, indent=1))
    (output / "timeline.html").write_text(timeline_html(samples, marks, f"Load test {sent.run_id}: {requests} "
                                                                        f"requests + {poison_count} poison"))
    return Result(sent, samples, marks, letters, rows, output)


def table(rows: Sequence[tuple[str, str]]) -> str:
    """The summary as an aligned two-column text table."""
    width = max((len(label) for label, _ in rows), default=0)
    rule = "-" * (width + 2 + max((len(value) for _, value in rows), default=0))
    return "\n".join([rule, *(f"{label.ljust(width)}  {value}" for label, value in rows), rule])
