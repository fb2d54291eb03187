"""``/metrics``: what an operator graphs, read from the live objects at scrape time.

The domain keeps plain counters (``TerminalStats``, the bot's refusal
counts, the chat manager's sessions); this collector turns them into the
Prometheus text format, so nothing on a hot path touches prometheus_client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@attrs.define(eq=False)
class PibridgeCollector(Collector):
    bot: Any = None
    chat: Any = None

    def collect(self) -> Iterator[Metric]:
        if self.bot is not None:
            yield from self._terminal()
        if self.chat is not None:
            yield from self._chat()

    def _terminal(self) -> Iterator[Metric]:
        bot = self.bot
        stats = bot.stats
        sessions = list(bot.sessions.values())
        yield GaugeMetricFamily(
            "pibridge_terminal_sessions", "Live terminal sessions", value=len(sessions)
        )
        attached = sum(1 for s in sessions if s.link is not None)
        yield GaugeMetricFamily(
            "pibridge_terminal_attached_clients", "Terminal sessions with a client", value=attached
        )
        traffic = CounterMetricFamily(
            "pibridge_terminal_bytes", "Terminal bytes moved", labels=["direction"]
        )
        traffic.add_metric(["output"], stats.output_bytes)
        traffic.add_metric(["input"], stats.input_bytes)
        yield traffic
        gates = [s.gate for s in sessions if s.gate is not None]
        yield GaugeMetricFamily(
            "pibridge_terminal_output_in_flight_bytes",
            "Output sent but not yet acknowledged by clients",
            value=sum(g.in_flight for g in gates),
        )
        yield GaugeMetricFamily(
            "pibridge_terminal_paused_sessions",
            "Sessions whose PTY is not being read (slow client or link)",
            value=sum(1 for g in gates if g.paused),
        )
        yield CounterMetricFamily(
            "pibridge_terminal_output_pauses",
            "Times a PTY stopped being read",
            value=stats.pauses + sum(g.pauses for g in gates),
        )
        yield CounterMetricFamily(
            "pibridge_terminal_attaches", "Client attaches", value=stats.attaches
        )
        yield CounterMetricFamily(
            "pibridge_terminal_reattaches",
            "Attaches that resumed a session",
            value=stats.reattaches,
        )
        yield CounterMetricFamily(
            "pibridge_terminal_program_exits", "Terminal programs that ended", value=stats.exits
        )
        refusals = CounterMetricFamily(
            "pibridge_refusals", "Refused opens, objects and subscriptions", labels=["reason"]
        )
        for reason, count in sorted(bot.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        rtts = [
            a.heartbeat.smoothed_rtt
            for a in bot.attachments
            if a.heartbeat is not None and a.heartbeat.smoothed_rtt is not None
        ]
        yield GaugeMetricFamily(
            "pibridge_heartbeat_rtt_seconds",
            "Smoothed heartbeat round trip, worst attached client",
            value=max(rtts) if rtts else 0.0,
        )

    def _chat(self) -> Iterator[Metric]:
        sessions = list(self.chat.sessions.values())
        states = Counter(s.state.value for s in sessions)
        live = GaugeMetricFamily("pibridge_chat_sessions", "Chat sessions", labels=["state"])
        for state, count in sorted(states.items()):
            live.add_metric([state], count)
        yield live
        yield GaugeMetricFamily(
            "pibridge_sse_clients",
            "Event streams following chat sessions",
            value=sum(s.log.listener_count for s in sessions),
        )


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def build_registry(bot: Any = None, chat: Any = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PibridgeCollector(bot, chat))
    return registry
