"""The team's load test on the local cluster with real KEDA (what `digestctl up` runs), as figures.

Prints the timings of one run from an idle pipeline (workers at zero): first replica Ready, first digest posted,
all requests posted, back to zero replicas, and the replicas KEDA asked for against its formula
ceil(queue / messagesPerReplica) within [min, max]. The baseline, measured in the same run, is the same requests
on the same pipeline with `minReplicas = maxReplicas` (every worker already running): the ratio says what scaling
from zero costs on top of the work itself. Goals: first digest <= pollingInterval + 5 s; all posted <=
pollingInterval + 15 s.

`--chaos`: N requests (default 1000) while worker pods are deleted with grace period 0 at random moments and the
operator pod twice; checks that every request is posted at least once, duplicates <= pod kills x concurrency, the
dead-letter queue holds exactly the poison messages, and the pipeline returns to Ready.

    uv run python -m bench.keda_loadtest [--requests 25] [--poison 3] [--chaos [--requests 1000]]

Needs root (it starts or reuses the `digestctl cluster`); leaves the cluster running, `digestctl down` removes it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.report import print_result
from digest_cluster import install, loadtest, sample, stack
from digest_cluster.cluster import Cluster


def _scale_floor(cluster: Cluster, replicas: int | None) -> None:
    """Pin the pipeline's worker count (baseline) or give it back to KEDA's full range (None)."""
    low = 0 if replicas is None else replicas
    cluster.kubectl("patch", "dgp", stack.PIPELINE, "-n", stack.NAMESPACE, "--type=merge", "-p",
                    json.dumps({"spec": {"scaling": {"minReplicas": low}}}))


def _formula_gap(samples: list[loadtest.Sample], options: stack.Options) -> float:
    """Mean |desired - ceil(queue / messagesPerReplica)| over the samples while messages were queued."""
    gaps = [abs(s.desired - max(1, min(options.max_replicas, math.ceil(s.queue / options.messages_per_replica))))
            for s in samples if s.queue > 0]
    return sum(gaps) / len(gaps) if gaps else 0.0


def _run(running: stack.Stack, options: stack.Options, output: Path, requests: int, poison: int,
         within: float = 900, until_zero: bool = True) -> loadtest.Result:
    conversation = f"19:{uuid.uuid4().hex}@thread.v2"
    sample.seed(running.postgres, running.teams, [conversation])
    return loadtest.run(running.cluster, running.emulator, running.teams, namespace=stack.NAMESPACE,
                        pipeline=stack.PIPELINE, queue=stack.QUEUE, conversation=conversation, requests=requests,
                        poison_count=poison, output=output, within=within, until_zero=until_zero)


def _timings(options: stack.Options, output: Path, requests: int, poison: int) -> dict[str, Any]:
    running, _ = stack.start(options, lambda line: print(line, file=sys.stderr))
    idle = _run(running, options, output / "from-zero", requests, poison)
    _scale_floor(running.cluster, options.max_replicas)
    install.wait_for(running.cluster, ("deployment", f"{stack.PIPELINE}-worker", "-n", stack.NAMESPACE),
                     lambda o: (o or {}).get("status", {}).get("readyReplicas") == options.max_replicas, 300,
                     "the baseline's workers Ready")
    warm = _run(running, options, output / "warm", requests, 0, until_zero=False)
    _scale_floor(running.cluster, None)
    marks, base = idle.milestones, warm.milestones
    ratio = (marks.all_posted / base.all_posted) if marks.all_posted and base.all_posted else float("nan")
    return {
        "requests": f"{requests} + {poison} poison",
        "first replica Ready": f"{marks.first_replica_ready} s",
        "first digest posted": f"{marks.first_digest} s (goal <= {options.polling_interval + 5} s)",
        "all posted": f"{marks.all_posted} s (goal <= {options.polling_interval + 15} s)",
        "all posted, workers already up (baseline)": f"{base.all_posted} s",
        "from zero / baseline": f"{ratio:.2f}",
        "back to zero replicas": f"{marks.back_to_zero} s (cooldownPeriod {options.cooldown_period} s)",
        "peak replicas": marks.peak_replicas,
        "mean |desired - KEDA formula| while queued": f"{_formula_gap(idle.samples, options):.2f}",
        "duplicates": idle.samples[-1].posts - idle.samples[-1].delivered,
        "report": str(output / "from-zero" / "timeline.html"),
    }


def _killer(cluster: Cluster, stop: threading.Event, worker_kills: int, operator_kills: int, window: float,
            killed: list[str]) -> None:
    moments = sorted([("worker", random.uniform(5, window)) for _ in range(worker_kills)]
                     + [("operator", random.uniform(5, window)) for _ in range(operator_kills)], key=lambda m: m[1])
    started = time.monotonic()
    for kind, at in moments:
        if stop.wait(max(0.0, at - (time.monotonic() - started))):
            return
        namespace, selector = ((stack.NAMESPACE, f"app.kubernetes.io/instance={stack.PIPELINE},"
                                "app.kubernetes.io/component=worker") if kind == "worker"
                               else (install.OPERATOR_NAMESPACE, "app.kubernetes.io/name=digest-operator"))
        pods = [p["metadata"]["name"] for p in (install.get(cluster, "pods", "-n", namespace, "-l", selector)
                                                 or {}).get("items", []) if not p["metadata"].get("deletionTimestamp")]
        if pods:
            victim = random.choice(pods)
            cluster.kubectl("delete", "pod", victim, "-n", namespace, "--grace-period=0", "--force", check=False)
            killed.append(f"{kind}:{victim}@{time.monotonic() - started:.0f}s")


def _chaos(options: stack.Options, output: Path, requests: int, poison: int) -> dict[str, Any]:
    running, _ = stack.start(options, lambda line: print(line, file=sys.stderr))
    stop, killed = threading.Event(), list[str]()
    thread = threading.Thread(target=_killer, args=(running.cluster, stop, 5, 2, 60.0, killed), daemon=True)
    thread.start()
    try:
        result = _run(running, options, output / "chaos", requests, poison, within=1800)
    finally:
        stop.set()
        thread.join()
    last = result.samples[-1]
    duplicates = last.posts - last.delivered
    worker_kills = sum(1 for k in killed if k.startswith("worker"))
    bound = worker_kills * options.concurrency
    exact_dlq = sorted(d["message_id"] for d in result.dead_letters) == sorted(result.run.poison)
    ready = install.wait_for(running.cluster, ("dgp", stack.PIPELINE, "-n", stack.NAMESPACE),
                             lambda o: install.is_true(o, "Ready"), 300, "the pipeline Ready again")
    return {
        "requests": f"{requests} + {poison} poison",
        "kills": ", ".join(killed),
        "posted at least once": f"{last.delivered}/{requests} ({'ok' if last.delivered == requests else 'LOST'})",
        "duplicates": f"{duplicates} (bound {worker_kills} kills x {options.concurrency} = {bound}: "
                      f"{'ok' if duplicates <= bound else 'EXCEEDED'})",
        "dead-letter queue": f"{len(result.dead_letters)} of {poison} poison ({'ok' if exact_dlq else 'WRONG'})",
        "pipeline Ready": install.condition(ready, "Ready"),
        "all posted": f"{result.milestones.all_posted} s",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int)
    parser.add_argument("--poison", type=int, default=3)
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("/var/lib/digest-cluster/bench"))
    args = parser.parse_args()
    options = stack.Options(concurrency=4 if args.chaos else 1, post_seconds=0.2 if args.chaos else 1.0)
    if args.chaos:
        print_result(_chaos(options, args.output, args.requests or 1000, args.poison))
    else:
        print_result(_timings(options, args.output, args.requests or 25, args.poison))


if __name__ == "__main__":
    main()
