"""`digestctl dlq`: inspect, export, requeue and purge a queue's dead-letter queue, and run the requeue policy.

Data goes to stdout (`--output table|json|jsonl`), logs and progress to stderr. Exit codes (`digest_cli.exitcodes`):
0 done; 1 invalid input (options, policy or export file); 2 usage; 4 partial (some selected messages were left or
failed: see the summary); 5 refused (destructive command without --yes on a non-TTY, or declined); 6 Service Bus or
Kubernetes unreachable / access refused; 7 `show`: no such sequence number.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from digest_cli.exitcodes import ExitCode

if TYPE_CHECKING:
    from digest_dlq.message import DlqMessage
    from digest_dlq.ops import Context
    from digest_dlq.report import Outcome
    from digest_dlq.select import Selection

log = logging.getLogger("digest.dlq")
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DESCRIPTION_WIDTH = 48


def fail(code: ExitCode, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def common(fn: F) -> F:
    """Options every dlq command takes."""
    options = [
        click.option("--namespace", envvar="DIGEST_SERVICEBUS_NAMESPACE", metavar="FQDN",
                     help="Service Bus namespace (DefaultAzureCredential). Env DIGEST_SERVICEBUS_NAMESPACE."),
        click.option("--connection-string", metavar="TEXT",
                     help="Connection string (SAS; works with the local emulator). Env "
                          "DIGEST_SERVICEBUS_CONNECTION_STRING, or DIGEST_SERVICEBUS_CONNECTION_STRING_FILE naming a "
                          "file that holds it. Takes precedence over --namespace."),
        click.option("--ca-file", envvar="DIGEST_SERVICEBUS_CA_FILE", metavar="PATH",
                     help="CA bundle for the management API's certificate: the local emulator's ca.pem (printed by "
                          "`digestctl emulator`) gives runtime counts and queue settings instead of peek counts. "
                          "Env DIGEST_SERVICEBUS_CA_FILE."),
        click.option("--queue", envvar="DIGEST_SERVICEBUS_QUEUE", metavar="NAME",
                     help="Queue whose dead-letter queue is used. Env DIGEST_SERVICEBUS_QUEUE."),
        click.option("--output", "-o", type=click.Choice(["table", "json", "jsonl"]), default="table",
                     show_default=True, help="Format of the data on stdout."),
        click.option("--retries", type=click.IntRange(0, 10), default=3, show_default=True,
                     help="SDK retries per Service Bus operation."),
        click.option("--max-wait", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
                     help="Seconds the dead-letter queue must stay empty before a scan (requeue, purge, monitor) "
                          "ends."),
        click.option("--verbose", "-v", is_flag=True, help="Log progress details to stderr."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def selection_options(fn: F) -> F:
    options = [
        click.option("--reason", metavar="GLOB", help="Dead-letter reason glob, e.g. 'Transient.Exhausted.*'."),
        click.option("--description", metavar="REGEX", help="Regex searched in the dead-letter error description."),
        click.option("--min-age", metavar="DURATION", help="Only messages at least this old (30s, 5m, 2h, 7d)."),
        click.option("--max-age", metavar="DURATION", help="Only messages at most this old."),
        click.option("--subject", help="Only messages with this subject (label)."),
        click.option("--message-id", "message_ids", multiple=True, help="Only these message ids (repeatable; "
                     "also matches x-original-message-id)."),
        click.option("--from-sequence", type=click.IntRange(1), help="Lowest sequence number."),
        click.option("--to-sequence", type=click.IntRange(1), help="Highest sequence number."),
        click.option("--limit", type=click.IntRange(1), help="At most this many messages."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("azure").setLevel(logging.WARNING if verbose else logging.ERROR)
    logging.getLogger("digest").setLevel(logging.INFO if verbose else logging.WARNING)


class _Progress:
    """A one-line counter on stderr, only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self.label, self.count = label, 0
        self.enabled = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.count += n
        if self.enabled:
            sys.stderr.write(f"\r{self.label}: {self.count}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.count:
            sys.stderr.write("\n")


def _connection_string(given: str | None, environ: Mapping[str, str]) -> str | None:
    """--connection-string, else DIGEST_SERVICEBUS_CONNECTION_STRING or the file ..._FILE names (never both)."""
    from digest_api import contract

    if given:
        return given
    try:
        return contract.secret(environ, contract.SERVICEBUS_CONNECTION_STRING)
    except contract.SecretError as exc:
        fail(ExitCode.USAGE, str(exc))


def _context(kw: dict[str, Any], label: str = "messages") -> tuple[Context, _Progress]:
    from digest_dlq import bus
    from digest_dlq.ops import Context

    _setup_logging(bool(kw.get("verbose")))
    kw["connection_string"] = _connection_string(kw.get("connection_string"), os.environ)
    if not kw.get("queue"):
        fail(ExitCode.USAGE, "--queue is required (or DIGEST_SERVICEBUS_QUEUE)")
    if not kw.get("connection_string") and not kw.get("namespace"):
        fail(ExitCode.USAGE, "give --namespace or --connection-string (or their DIGEST_SERVICEBUS_* variables)")
    progress = _Progress(label)
    endpoint = bus.Endpoint(connection_string=kw.get("connection_string"), namespace=kw.get("namespace"),
                            ca_file=kw.get("ca_file"))
    return Context(endpoint, str(kw["queue"]), {"retry_total": kw.get("retries", 3)}, progress), progress


def _selection(kw: dict[str, Any]) -> Selection:
    from digest_api.durations import parse_duration
    from digest_dlq.select import Selection

    def duration(name: str) -> datetime.timedelta | None:
        value = kw.get(name)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            fail(ExitCode.INVALID_INPUT, f"--{name.replace('_', '-')}: {exc}")

    pattern = None
    if kw.get("description") is not None:
        try:
            pattern = re.compile(kw["description"])
        except re.error as exc:
            fail(ExitCode.INVALID_INPUT, f"--description: invalid regular expression: {exc}")
    return Selection(
        reason=kw.get("reason"), description=pattern, min_age=duration("min_age"), max_age=duration("max_age"),
        subject=kw.get("subject"), message_ids=frozenset(kw.get("message_ids") or ()),
        from_sequence=kw.get("from_sequence"), to_sequence=kw.get("to_sequence"), limit=kw.get("limit"),
    )


def service_errors(fn: F) -> F:
    """Service Bus / credential failures → exit 6 with the error's type and first line (never a secret)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError
        from azure.servicebus.exceptions import ServiceBusError

        try:
            return fn(*args, **kwargs)
        except (ServiceBusError, ClientAuthenticationError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            fail(ExitCode.UNAVAILABLE, f"Service Bus: {type(exc).__name__}: {first[:300]}")

    return wrapper  # type: ignore[return-value]


# ---- output ----------------------------------------------------------------------------------------------------

def _iso(value: datetime.datetime | None) -> str | None:
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z") if value else None


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _age(seconds: float | None) -> str:
    """Compact age like kubectl: 45s, 12m, 5h3m, 2d4h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def list_row(message: DlqMessage, now: datetime.datetime) -> dict[str, Any]:
    age = message.age(now)
    return {
        "sequenceNumber": message.sequence_number, "messageId": message.message_id,
        "enqueuedTime": _iso(message.enqueued_time), "ageSeconds": int(age.total_seconds()) if age else None,
        "deliveryCount": message.delivery_count, "reason": message.reason, "description": message.description,
        "size": message.size, "requeueCount": message.requeue_count,
    }


def emit(rows: list[dict[str, Any]], output: str, columns: list[tuple[str, str, Callable[[Any], str]]] | None,
         document: Any = None) -> None:
    """json: one document (`document` if given, else the rows); jsonl: one row per line; table: aligned columns."""
    if output == "json":
        click.echo(json.dumps(rows if document is None else document, indent=2, sort_keys=True, default=str))
        return
    if output == "jsonl":
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str))
        return
    if not columns:
        return
    table = [[title for title, _, _ in columns]]
    table += [[fmt(row.get(key)) for _, key, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())


def _s(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _desc(value: Any) -> str:
    return _shorten(str(value or ""), DESCRIPTION_WIDTH) or "-"


LIST_COLUMNS = [
    ("SEQ", "sequenceNumber", _s), ("MESSAGE-ID", "messageId", _s), ("ENQUEUED", "enqueuedTime", _s),
    ("AGE", "ageSeconds", _age), ("DELIVERIES", "deliveryCount", _s), ("REQUEUES", "requeueCount", _s),
    ("REASON", "reason", _s), ("DESCRIPTION", "description", _desc), ("SIZE", "size", _s),
]


def _summary(outcome: Outcome, output: str, extra: dict[str, Any] | None = None) -> None:
    summary = {**outcome.summary(), **(extra or {})}
    if output == "table":
        parts = [f"{k}={summary[k]}" for k in ("requeued", "parked", "purged", "skipped", "left", "failed")]
        click.echo(" ".join(parts))
        for title, key in (("left", "leftReasons"), ("failed", "failedReasons")):
            for reason, count in summary[key].items():
                click.echo(f"  {title}: {count} x {reason}")
        for error in summary["errors"]:
            click.echo(f"  error: {error}")
    else:
        emit([summary], output, None, summary if output == "json" else None)


def _finish(outcome: Outcome) -> NoReturn:
    sys.exit(ExitCode.OK if outcome.clean else ExitCode.PARTIAL)


def confirm(action: str, messages: list[DlqMessage], yes: bool) -> None:
    """Destructive commands: --yes, or an interactive confirmation showing the count and reasons."""
    if yes:
        return
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        fail(ExitCode.REFUSED, f"{action} changes the dead-letter queue: pass --yes (stdin is not a terminal)")
    reasons = Counter(m.reason or "(none)" for m in messages)
    click.echo(f"{action}: {len(messages)} message(s)", err=True)
    for reason, count in reasons.most_common(10):
        click.echo(f"  {count:>6}  {reason}", err=True)
    if not click.confirm("Proceed?", err=True, default=False):
        fail(ExitCode.REFUSED, "declined")


# ---- commands --------------------------------------------------------------------------------------------------

@click.group()
def dlq() -> None:
    """Dead-letter queue toolkit: list, show, stats, export, import, requeue, purge, monitor.

    \b
    Exit codes: 0 done; 1 invalid input; 2 usage; 4 partial (some selected messages left in the
    dead-letter queue or failed); 5 refused (needs --yes / declined); 6 Service Bus unreachable or
    access refused; 7 no such sequence number (show).
    """


@dlq.command("list")
@common
@selection_options
@service_errors
def list_(**kw: Any) -> None:
    """List dead-lettered messages (peek: nothing is locked, delivery counts stay as they are)."""
    from digest_dlq import ops

    ctx, progress = _context(kw, "peeked")
    now = ops.utcnow()
    messages = ops.select(ctx, _selection(kw), now)
    progress.done()
    emit([list_row(m, now) for m in messages], kw["output"], LIST_COLUMNS)


def _body_view(message: DlqMessage) -> dict[str, Any]:
    import base64

    from digest_dlq.message import deep_text, encode_value

    if message.body_type == "data":
        raw = b"".join(message.body)
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"encoding": "base64", "value": base64.b64encode(raw).decode()}
        try:
            return {"encoding": "json", "value": json.loads(decoded)}
        except ValueError:
            return {"encoding": "text", "value": decoded}
    return {"encoding": "amqp-" + message.body_type, "value": encode_value(deep_text(message.body))}


@dlq.command()
@click.argument("sequence_number", type=click.IntRange(1))
@common
@service_errors
def show(sequence_number: int, **kw: Any) -> None:
    """One message in full: properties, annotations, body (text/JSON decoded, else base64)."""
    from digest_dlq import ops
    from digest_dlq.message import encode_value

    ctx, _ = _context(kw)
    message = ops.show(ctx, sequence_number)
    if message is None:
        fail(ExitCode.NOT_FOUND, f"no message with sequence number {sequence_number} in {ctx.queue}/$DeadLetterQueue")
    now = ops.utcnow()
    doc = {
        **list_row(message, now),
        "bodyType": message.body_type, "body": _body_view(message),
        "properties": encode_value(message.properties),
        "applicationProperties": encode_value(message.application_properties),
        "annotations": encode_value(message.annotations), "header": encode_value(message.header),
    }
    if kw["output"] != "table":
        emit([doc], kw["output"], None, doc)
        return
    for key in ("sequenceNumber", "messageId", "enqueuedTime", "deliveryCount", "requeueCount", "reason",
                "description", "size", "bodyType"):
        click.echo(f"{key + ':':<17}{_s(doc[key])}")
    for section in ("properties", "applicationProperties", "annotations", "header"):
        click.echo(f"{section}:")
        for key, value in sorted(doc[section].items()):
            click.echo(f"  {key}: {json.dumps(value, default=str)}")
    body = doc["body"]
    click.echo(f"body ({body['encoding']}):")
    value = body["value"]
    click.echo(value if isinstance(value, str) else json.dumps(value, indent=2, default=str))


@dlq.command()
@common
@selection_options
@service_errors
def stats(**kw: Any) -> None:
    """Counts by reason and first description line, with oldest/newest age, plus the queue's runtime counts.

    Runtime counts come from ServiceBusAdministrationClient.get_queue_runtime_properties (needs Manage rights;
    against the local emulator, give its CA with --ca-file). Without the management API they are counted by
    peeking the queue and its dead-letter queue (`"source": "peek"`; slow on big queues).
    """
    from digest_dlq import bus, ops
    from digest_dlq.report import stats as group_stats

    ctx, progress = _context(kw, "peeked")
    now = ops.utcnow()
    messages = ops.select(ctx, _selection(kw), now)
    rows = group_stats(messages, now)
    runtime: dict[str, Any] | None
    try:
        facts = bus.queue_facts(ctx.endpoint, ctx.queue, runtime=True)
        runtime = {**facts.runtime, "source": "management"} if facts.runtime is not None else None
    except Exception as exc:  # no Manage right or management endpoint unreachable: fall back to peeking
        log.warning("runtime counts unavailable from the management API (%s); counting by peek", type(exc).__name__)
        runtime = None
    if runtime is None:
        with ctx.client() as client:
            runtime = bus.peek_counts(client, ctx.queue)
    progress.done()
    doc = {"queue": ctx.queue, "selected": len(messages), "groups": rows, "runtime": runtime}
    if kw["output"] == "table":
        emit(rows, "table", [
            ("COUNT", "count", _s), ("REASON", "reason", _s), ("DESCRIPTION", "description", _desc),
            ("OLDEST", "oldestAgeSeconds", _age), ("NEWEST", "newestAgeSeconds", _age), ("BYTES", "bytes", _s),
        ])
        click.echo("")
        click.echo("runtime: " + " ".join(f"{k}={v}" for k, v in runtime.items()))
    elif kw["output"] == "json":
        emit([], "json", None, doc)
    else:
        emit(rows, "jsonl", None)


@dlq.command()
@common
@selection_options
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSONL file to write ('-' for stdout).")
@service_errors
def export(path: Path, **kw: Any) -> None:
    """Lossless export of the selected messages (peek; nothing changes in the queue)."""
    from digest_dlq import ops

    ctx, progress = _context(kw, "peeked")
    now = ops.utcnow()
    messages = ops.select(ctx, _selection(kw), now)
    progress.done()
    if str(path) == "-":
        ops.export(ctx, messages, sys.stdout)
    else:
        with _writable(path) as out:
            ops.export(ctx, messages, out)
        emit([{"exported": len(messages), "file": str(path)}], kw["output"],
             [("EXPORTED", "exported", _s), ("FILE", "file", _s)], {"exported": len(messages), "file": str(path)})


def _writable(path: Path) -> IO[str]:
    """Open an export file for writing; a file problem is invalid input (exit 1), not a Service Bus error."""
    try:
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        fail(ExitCode.INVALID_INPUT, f"{path}: {exc.strerror}")


def _requeue_options(kw: dict[str, Any]) -> Any:
    from digest_dlq.lanes import auto_count
    from digest_dlq.ops import RequeueOptions

    return RequeueOptions(to=kw.get("to"), id_mode=kw["message_ids_mode"], park_queue=kw.get("park_queue"),
                          max_batch_bytes=kw.get("max_batch_bytes"), rate=kw.get("rate"),
                          lanes=kw.get("parallel") or auto_count(),
                          max_wait=kw["max_wait"])


def send_options(fn: F) -> F:
    options = [
        click.option("--to", metavar="QUEUE", help="Target queue (default: the origin queue)."),
        click.option("--message-ids", "message_ids_mode", type=click.Choice(["auto", "preserve", "regenerate"]),
                     default="auto", show_default=True,
                     help="Copy ids: keep them, regenerate deterministically ({original}:rq{n}), or auto: "
                          "regenerate when the target has duplicate detection (or when that cannot be read)."),
        click.option("--max-batch-bytes", type=click.IntRange(1024),
                     help="Byte limit of one send batch (default and cap: what the link allows, 256 KB on "
                          "Standard, 1 MB on Premium)."),
        click.option("--parallel", type=click.IntRange(1, 16), default=None,
                     help="Lanes: concurrent lock-scans, each in its own process (forked; on its own connection). "
                          "One lane is bound by one CPU. Default: 2 where two CPUs are usable, else 1."),
        click.option("--rate", type=click.FloatRange(0.1), help="At most this many messages per second."),
        click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required on a non-TTY)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@dlq.command("import")
@common
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="A file written by `dlq export`.")
@send_options
@service_errors
def import_(path: Path, **kw: Any) -> None:
    """Re-send exported messages (restore a purge, move between namespaces) as faithful copies to the queue."""
    from digest_dlq import ops
    from digest_dlq.records import RecordError

    ctx, progress = _context(kw, "sent")
    try:
        messages = list(ops.read_export(path))
    except (RecordError, ValueError) as exc:
        fail(ExitCode.INVALID_INPUT, f"{path}: {exc}")
    confirm(f"import into {kw.get('to') or ctx.queue}", messages, kw["yes"])
    outcome = ops.import_file(ctx, messages, _requeue_options(kw), ops.utcnow())
    progress.done()
    _summary(outcome, kw["output"], {"sent": len(outcome.requeued)})
    _finish(outcome)


@dlq.command()
@common
@selection_options
@send_options
@click.option("--park-queue", metavar="QUEUE", help="Send copies too large to requeue here instead of leaving them.")
@click.option("--dry-run", is_flag=True, help="Print what would happen; change nothing.")
@service_errors
def requeue(dry_run: bool, **kw: Any) -> None:
    """Send faithful copies of the selected messages back to the queue, then complete the originals.

    Per message: receive under lock → copy (allow-listed properties, body type kept, DeadLetter* stripped,
    x-requeue-count + 1, x-original-message-id) → send in byte-packed batches → complete the original. A copy that
    does not fit a batch stays in the dead-letter queue (or goes to --park-queue) and is reported.
    """
    from digest_dlq import ops

    ctx, progress = _context(kw, "scanned")
    selection = _selection(kw)
    options = _requeue_options(kw)
    now = ops.utcnow()
    if dry_run:
        rows = ops.requeue_preview(ctx, selection, options, now)
        progress.done()
        emit(rows, kw["output"], [
            ("SEQ", "sequenceNumber", _s), ("MESSAGE-ID", "messageId", _s), ("NEW-ID", "newMessageId", _s),
            ("TARGET", "target", _s), ("REQUEUES", "requeueCount", _s), ("REASON", "reason", _s),
            ("SIZE", "size", _s), ("OVERSIZE", "oversize", _s),
        ])
        return
    if not kw["yes"]:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            fail(ExitCode.REFUSED, "requeue changes the dead-letter queue: pass --yes (stdin is not a terminal)")
        confirm(f"requeue to {options.to or ctx.queue}", ops.select(ctx, selection, now), kw["yes"])
    outcome = ops.requeue(ctx, selection, options, now)
    progress.done()
    _summary(outcome, kw["output"])
    _finish(outcome)


@dlq.command()
@common
@selection_options
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the selected messages here first; only exported messages are purged.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required on a non-TTY).")
@service_errors
def purge(export_path: Path | None, yes: bool, **kw: Any) -> None:
    """Delete the selected messages from the dead-letter queue (complete under lock)."""
    from digest_dlq import ops

    ctx, progress = _context(kw, "scanned")
    selection = _selection(kw)
    now = ops.utcnow()
    if not yes and not (sys.stdin.isatty() and sys.stderr.isatty()):
        fail(ExitCode.REFUSED, "purge deletes messages: pass --yes (stdin is not a terminal)")
    only: set[int] | None = None
    messages: list[DlqMessage] | None = None
    if export_path is not None:
        messages = ops.select(ctx, selection, now)
        with _writable(export_path) as out:
            ops.export(ctx, messages, out)
        only = {m.sequence_number for m in messages}
        log.warning("exported %d message(s) to %s", len(messages), export_path)
    if not yes:
        confirm(f"purge {ctx.queue}/$DeadLetterQueue", messages or ops.select(ctx, selection, now), yes)
    outcome = ops.purge(ctx, selection, now, only, ops.RequeueOptions(max_wait=kw["max_wait"]))
    progress.done()
    _summary(outcome, kw["output"])
    _finish(outcome)


@dlq.command()
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="DIGEST_REQUEUE_POLICY_FILE",
              help="Policy document (the monitor ConfigMap's requeue-policy.json). Env DIGEST_REQUEUE_POLICY_FILE.")
@click.option("--pipeline", metavar="NAMESPACE/NAME", help="Read the policy from this DigestPipeline instead "
              "(kubeconfig or in-cluster credentials).")
@click.option("--termination-log", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Also write the compact report here (the container's termination message, "
                   f"{DEFAULT_TERMINATION_LOG} in the CronJob).")
@common
@service_errors
def monitor(policy_path: Path | None, pipeline: str | None, termination_log: Path | None, **kw: Any) -> None:
    """One evaluation of the requeue policy (what the DLQ monitor CronJob runs); prints the report."""
    from pydantic import ValidationError

    from digest_dlq import ops
    from digest_dlq.report import compact

    if (policy_path is None) == (pipeline is None):
        fail(ExitCode.USAGE, "give exactly one of --policy or --pipeline")
    try:
        raw = _policy_from_file(policy_path) if policy_path else _policy_from_pipeline(str(pipeline))
        document = ops.PolicyDocument.parse(raw)
    except ValidationError as exc:
        problems = "; ".join(f"requeuePolicy.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        fail(ExitCode.INVALID_INPUT, f"invalid policy: {problems}")
    except (KeyError, TypeError) as exc:
        fail(ExitCode.INVALID_INPUT, f"invalid policy document: missing {exc}")
    kw["queue"] = kw.get("queue") or document.queue
    ctx, progress = _context(kw, "peeked")
    result = ops.monitor(ctx, document, ops.utcnow(), max_wait=kw["max_wait"])
    progress.done()
    text = compact(result.report)
    if termination_log is not None:
        try:
            termination_log.write_text(text)
        except OSError as exc:
            log.warning("could not write the termination message to %s: %s", termination_log, exc)
    if kw["output"] == "table":
        report = result.report
        click.echo(f"mode={report['mode']} dlq={report['count']} oldest={_age(report['oldestAgeSeconds'])} "
                   f"circuit={report['circuit']['state']} requeued={report['requeued']} parked={report['parked']} "
                   f"left={report['left']} failed={report['failed']}")
        for action, reasons in sorted(report["reasons"].items()):
            for reason, count in sorted(reasons.items()):
                click.echo(f"  {action:<8} {count:>6}  {reason}")
    else:
        emit([result.report], kw["output"], None, result.report)
    _finish(result.outcome)


def _policy_from_file(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(ExitCode.INVALID_INPUT, f"{path}: {exc.strerror}")
    except ValueError as exc:
        fail(ExitCode.INVALID_INPUT, f"{path}: not JSON: {exc}")
    if not isinstance(raw, dict):
        fail(ExitCode.INVALID_INPUT, f"{path}: expected a JSON object")
    return raw


def _policy_from_pipeline(ref: str) -> dict[str, Any]:
    """The policy document the operator would render for NAMESPACE/NAME, read from the Kubernetes API."""
    import asyncio

    from digest_api import API_VERSION, PLURAL
    from digest_api.parse import SpecError, parse_pipeline

    try:  # the operator's API client and renderer: not in the worker image, whose CronJob passes --policy
        import kopf

        from digest_operator.k8s import ApiError, KubeClient
        from digest_operator.render.dlq_monitor import policy_document
        from digest_operator.render.meta import Owner
        from digest_operator.runtime import default_credentials
    except ImportError:
        fail(ExitCode.USAGE, "--pipeline needs the operator package, which this installation lacks; use --policy")

    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        fail(ExitCode.USAGE, "--pipeline must be NAMESPACE/NAME")

    async def fetch() -> dict[str, Any] | None:
        client = KubeClient(default_credentials, field_manager="digestctl")
        try:
            return await client.get(API_VERSION, PLURAL, namespace, name)
        finally:
            await client.close()

    try:
        body = asyncio.run(fetch())
    except (ApiError, kopf.LoginError) as exc:
        fail(ExitCode.UNAVAILABLE, f"Kubernetes API: {exc}")
    if body is None:
        fail(ExitCode.NOT_FOUND, f"DigestPipeline {ref} not found")
    try:
        pipeline = parse_pipeline(body)
    except SpecError as exc:
        fail(ExitCode.INVALID_INPUT, f"DigestPipeline {ref}: {exc}")
    return policy_document(Owner(pipeline.name, pipeline.namespace, pipeline.uid), pipeline.spec)
