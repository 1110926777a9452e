"""`/metrics`: a `View` as Prometheus text exposition, through a prometheus_client Collector.

A custom Collector rather than prometheus_client's Gauge objects: the values are the last
poll's, read at scrape time from a frozen View, so nothing is updated per poll and a
cluster's series are simply absent once it has gone (no label sets to remember to remove).
The metric names are the contract dashboards and alert rules are written against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from qwatch.alerts.thresholds import RULES
from qwatch.serve.state import DURATION_BUCKETS, Lingering, View
from qwatch.values import STATES

CLUSTER = ["site", "host", "cluster_id"]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ViewCollector(Collector):
    """Collects whatever View `source` returns at the moment of the scrape."""

    def __init__(self, source: Callable[[], View]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        return iter(families(self.source()))


def families(view: View) -> list[Metric]:
    build = GaugeMetricFamily("qwatch_build_info", "qwatch's version", labels=["version"])
    build.add_metric([view.version], 1)
    info = GaugeMetricFamily(
        "qwatch_cluster_info", "1 for each live cluster", labels=[*CLUSTER, "pid"]
    )
    state = GaugeMetricFamily(
        "qwatch_cluster_state",
        "1 for the cluster's current state, 0 for the others (all 0 once it vanished)",
        labels=[*CLUSTER, "state"],
    )
    workers = GaugeMetricFamily("qwatch_cluster_workers", "workers in the pool", labels=CLUSTER)
    task_q = GaugeMetricFamily(
        "qwatch_cluster_task_queue_size", "tasks in the cluster's own queue", labels=CLUSTER
    )
    result_q = GaugeMetricFamily(
        "qwatch_cluster_result_queue_size", "results waiting to be saved", labels=CLUSTER
    )
    reincarnations = CounterMetricFamily(
        "qwatch_cluster_reincarnations", "workers reincarnated (the record's RC)", labels=CLUSTER
    )
    born = GaugeMetricFamily(
        "qwatch_cluster_start_time_seconds", "the cluster's time of birth", labels=CLUSTER
    )
    hosts = GaugeMetricFamily(
        "qwatch_host_clusters",
        "live clusters on each host that had one in the last 24 h",
        labels=["site", "host"],
    )
    site_clusters = GaugeMetricFamily(
        "qwatch_site_clusters", "live clusters of the site", labels=["site"]
    )
    # A queue whose backlog cannot be read (SQS, MongoDB, an unreachable ORM database) has
    # no sample: absent, not a zero that would look like an empty queue.
    queued = GaugeMetricFamily(
        "qwatch_broker_queue_length",
        "tasks waiting in the broker, per queue",
        labels=["site", "queue", "broker"],
    )
    oldest = GaugeMetricFamily(
        "qwatch_broker_oldest_task_age_seconds",
        "age of the oldest waiting task, where the broker tells it (ORM)",
        labels=["site", "queue", "broker"],
    )
    events = CounterMetricFamily(
        "qwatch_events", "history events since the daemon started", labels=["site", "kind"]
    )
    skipped = GaugeMetricFamily(
        "qwatch_records_skipped", "records refused on the last poll", labels=["site", "reason"]
    )
    redis_up = GaugeMetricFamily(
        "qwatch_redis_up", "1 if the site's Redis was read on the last poll", labels=["site"]
    )
    last_poll = GaugeMetricFamily(
        "qwatch_last_poll_timestamp_seconds", "the last successful read", labels=["site"]
    )
    duration = HistogramMetricFamily(
        "qwatch_poll_duration_seconds", "time to poll the site", labels=["site"]
    )
    sampler = GaugeMetricFamily(
        "qwatch_sampler", "1 if this daemon holds the site's sampler lock", labels=["site"]
    )
    alerts = GaugeMetricFamily(
        "qwatch_alerts_firing",
        "alerts of each rule firing now (qwatch's own rules; exported by the sampler)",
        labels=["site", "rule"],
    )
    for site in view.sites:
        name = site.site
        if site.leader:
            for rule in RULES:
                alerts.add_metric([name, rule], site.alerts_firing.get(rule, 0))
        for lingering in site.clusters:
            stat = lingering.stat
            labels = [name, stat.host, stat.cluster_id]
            if lingering.live:
                info.add_metric([*labels, "" if stat.pid is None else str(stat.pid)], 1)
            for one in STATES:
                state.add_metric([*labels, one], 1 if lingering.live and stat.status == one else 0)
            workers.add_metric(labels, stat.pool)
            task_q.add_metric(labels, stat.task_q_size)
            result_q.add_metric(labels, stat.done_q_size)
            reincarnations.add_metric(labels, stat.reincarnations)
            born.add_metric(labels, stat.tob.timestamp())
        for host, count in sorted(site.hosts.items()):
            hosts.add_metric([name, host], count)
        if site.leader and site.poll is not None:
            site_clusters.add_metric([name], len(site.poll.clusters))
        for backlog in site.backlogs:
            queue_labels = [name, backlog.queue, backlog.broker]
            if backlog.length is not None:
                queued.add_metric(queue_labels, backlog.length)
            if backlog.oldest_age_s is not None:
                oldest.add_metric(queue_labels, backlog.oldest_age_s)
        for kind, count in sorted(site.events.items()):
            events.add_metric([name, kind], count)
        for reason, count in sorted(site.skipped.items()):
            skipped.add_metric([name, reason], count)
        redis_up.add_metric([name], 1 if site.redis_up else 0)
        if site.last_poll_at is not None:
            last_poll.add_metric([name], site.last_poll_at.timestamp())
        bounds = [*(str(b) for b in DURATION_BUCKETS), "+Inf"]
        duration.add_metric([name], list(zip(bounds, site.buckets, strict=True)), site.duration_sum)
        sampler.add_metric([name], 1 if site.leader else 0)
    limits = GaugeMetricFamily(
        "qwatch_site_task_queue_limit",
        "Django Q's queue_limit for the site's clusters, where configured",
        labels=["site"],
    )
    for name, limit in sorted(view.queue_limits.items()):
        limits.add_metric([name], limit)
    pending = GaugeMetricFamily(
        "qwatch_store_pending_polls", "polls waiting in the history writer's buffer"
    )
    pending.add_metric([], view.pending)
    dropped = CounterMetricFamily(
        "qwatch_store_dropped_polls", "polls dropped because the write buffer was full"
    )
    dropped.add_metric([], view.dropped)
    return [
        build,
        info,
        state,
        workers,
        task_q,
        result_q,
        reincarnations,
        born,
        hosts,
        site_clusters,
        queued,
        oldest,
        events,
        skipped,
        redis_up,
        last_poll,
        duration,
        sampler,
        alerts,
        limits,
        pending,
        dropped,
    ]


def reference(view: View) -> bytes:
    """The whole exposition by prometheus_client alone: what `render` must equal, byte for byte."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(lambda: view))
    return generate_latest(registry)


CLUSTER_FAMILIES = (
    "qwatch_cluster_info",
    "qwatch_cluster_state",
    "qwatch_cluster_workers",
    "qwatch_cluster_task_queue_size",
    "qwatch_cluster_result_queue_size",
    "qwatch_cluster_reincarnations_total",
    "qwatch_cluster_start_time_seconds",
)
# One cluster's text, one string per family in CLUSTER_FAMILIES (info "" once it vanished).
_Lines = tuple[str, str, str, str, str, str, str]


class Renderer:
    """The text exposition of a View, equal to `reference(view)`, byte for byte.

    prometheus_client writes every family's HELP and TYPE and every site-level series; the
    per-cluster sample lines (eleven per cluster, nearly all of a large fleet's text) are
    written here, after their family's TYPE line: generate_latest spends some 60 us on a
    sample (validating each label name again), 0.7 s for 1,000 clusters against a 50 ms
    target. A cluster's lines are kept from one scrape to the next while what they show
    (not its record's timestamp) is unchanged, which between two scrapes is nearly always.
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], tuple[tuple[object, ...], _Lines]] = {}

    def __call__(self, view: View) -> bytes:
        light = replace(view, sites=tuple(replace(site, clusters=()) for site in view.sites))
        head = reference(light).decode()
        kept, fresh = self._kept, {}
        columns: list[list[str]] = [[] for _ in CLUSTER_FAMILIES]
        for site in view.sites:
            for lingering in site.clusters:
                stat = lingering.stat
                key = (site.site, stat.cluster_id)
                shown: tuple[object, ...] = (
                    lingering.live,
                    stat.host,
                    stat.pid,
                    stat.status,
                    stat.pool,
                    stat.task_q_size,
                    stat.done_q_size,
                    stat.reincarnations,
                    stat.tob,
                )
                hit = kept.get(key)
                lines = (
                    hit[1] if hit is not None and hit[0] == shown else _lines(site.site, lingering)
                )
                fresh[key] = (shown, lines)
                for column, text in zip(columns, lines, strict=True):
                    column.append(text)
        self._kept = fresh  # vanished clusters drop out; a concurrent render only redoes work
        per_family = dict(zip(CLUSTER_FAMILIES, columns, strict=True))
        out: list[str] = []
        for line in head.splitlines(keepends=True):
            out.append(line)
            if line.startswith("# TYPE "):
                out.extend(per_family.get(line.split(" ", 3)[2], ()))
        return "".join(out).encode()


def render(view: View) -> bytes:
    """One View's text exposition, with nothing kept (the listener keeps a Renderer)."""
    return Renderer()(view)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _lines(site: str, lingering: Lingering) -> _Lines:
    stat = lingering.stat
    site_label = _escape(site)
    # Label names in sorted order, as generate_latest writes them.
    front = f'cluster_id="{_escape(stat.cluster_id)}",host="{_escape(stat.host)}"'
    labels = f'{front},site="{site_label}"'
    info = ""
    if lingering.live:
        pid = "" if stat.pid is None else str(stat.pid)
        info = f'qwatch_cluster_info{{{front},pid="{pid}",site="{site_label}"}} 1.0\n'
    state = "".join(
        f'qwatch_cluster_state{{{labels},state="{one}"}} '
        f"{'1.0' if lingering.live and stat.status == one else '0.0'}\n"
        for one in STATES
    )
    return (
        info,
        state,
        f"qwatch_cluster_workers{{{labels}}} {_number(stat.pool)}\n",
        f"qwatch_cluster_task_queue_size{{{labels}}} {_number(stat.task_q_size)}\n",
        f"qwatch_cluster_result_queue_size{{{labels}}} {_number(stat.done_q_size)}\n",
        f"qwatch_cluster_reincarnations_total{{{labels}}} {_number(stat.reincarnations)}\n",
        f"qwatch_cluster_start_time_seconds{{{labels}}} {_go_float(stat.tob.timestamp())}\n",
    )


def _number(value: int) -> str:
    # _go_float's answer for small whole numbers, without the float round trip.
    return f"{value}.0" if 0 <= value < 1_000_000 else _go_float(value)


def _go_float(value: float) -> str:
    """A finite number as prometheus_client's floatToGoString writes it (which is untyped):
    Python's repr, but with an exponent from seven digits before the point, as Go does."""
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
