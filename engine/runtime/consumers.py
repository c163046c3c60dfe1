"""The consumer stage: the pipeline's events, routed per loan to the lending consumer.

After the core has stepped a batch, the stage takes what the pipeline tapped (each accepted
reading, then the alerts it raised; timer and loan alerts as they fired) and hands each to
the consumer with the loan it belongs to: a reading by its tracker's loan, an alert by its
`loan_id`; only active loans. The consumer's alerts and the rows of its state go back to the
runtime, which commits them with the batch: a consumer sees exactly what is committed, and
a crash loses neither its input nor its output.

Runtimes that read the consumer from other threads (the API of the live engine) take
`lock`; the stage holds it while it feeds the consumer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from alerts.model import Alert, AlertType, alert_from_json
from engine.runtime.metrics import gauge_lines, labelled_gauge_lines
from engine.runtime.pipeline import Pipeline
from engine.store.port import AlertQuery, ConsumerRow, Store
from geofence.fence import FenceKind
from lending.consumer import LOANS, SITES, LendingConsumer
from lending.model import LoanStatus


class ConsumerStage:
    """Feeds the lending consumer from a pipeline's tap."""

    def __init__(self, pipeline: Pipeline, consumer: LendingConsumer) -> None:
        self.pipeline = pipeline
        self.consumer = consumer
        self.lock = threading.Lock()
        pipeline.tap = []
        consumer.is_marked = self.is_marked

    def is_marked(self, lat: float, lon: float, radius_m: float) -> bool:
        """Whether a place is inside, or within `radius_m` of, a `risk_site` fence of the
        pipeline's current fences."""
        index = self.pipeline.index
        if not len(index):
            return False
        fences = index.by_id
        hits = index.hits([lat], [lon], radius_m)[0]
        return any(fences[h.fence_id].kind is FenceKind.RISK_SITE for h in hits)

    def feed(self, now_ms: int, extra: Sequence[Alert] = ()) -> list[Alert]:
        """Route what the pipeline tapped since the last call (and `extra` alerts raised
        outside it and stored already, such as a PUT's VIN conflict); `now_ms`, the
        runtime's clock, stamps the `detected_at` of what readings raise.

        Returns the tapped alerts with the consumer's own (counted) right after the event
        that raised them: the order a loan's webhooks go out in, event by event.
        """
        pipeline = self.pipeline
        events = pipeline.tap or []
        pipeline.tap = []
        loans = pipeline.loans
        by_device = pipeline.ctx.loans_by_device
        consumer = self.consumer
        wanted = consumer.alert_types
        active = LoanStatus.ACTIVE
        raised: list[Alert] = []
        ordered: list[Alert] = []
        with self.lock:
            for alert in extra:
                loan = loans.get(alert.loan_id) if alert.loan_id is not None else None
                if loan is not None and loan.status is active:
                    raised += consumer.on_alert(loan, alert, alert.detected_ms)
            ordered += raised
            for event in events:
                if isinstance(event, Alert):
                    ordered.append(event)
                    if event.type not in wanted or event.loan_id is None:
                        continue
                    loan = loans.get(event.loan_id)
                    if loan is not None and loan.status is active:
                        new = consumer.on_alert(loan, event, event.detected_ms)
                        if new:
                            raised += new
                            ordered += new
                else:
                    loan = by_device.get(event.device_id)
                    if loan is not None and loan.status is active:
                        new = consumer.on_reading(loan, event, now_ms)
                        if new:
                            raised += new
                            ordered += new
        pipeline.count_raised(raised)
        return ordered

    def take_rows(self) -> list[ConsumerRow]:
        """The consumer's state rows changed since the last call: for the batch's commit."""
        with self.lock:
            return [ConsumerRow(name, key, doc) for name, key, doc in self.consumer.take_rows()]

    def unseen_vin_conflicts(self, store: Store, since_ms: int) -> list[Alert]:
        """The loans' VIN conflicts stored since `since_ms` that the consumer has not seen,
        oldest first. A PUT stores its alert at once and the consumer takes it at the
        engine's next commit: a crash in between must not lose it (fed again at start)."""
        found: list[Alert] = []
        cursor: str | None = None
        while True:
            query = AlertQuery(type=AlertType.VIN_CONFLICT.value, since_ms=since_ms, cursor=cursor)
            page = store.list_alerts(query)
            found += [alert_from_json(a.alert) for a in page.items]
            cursor = page.next
            if cursor is None:
                break
        with self.lock:
            books = self.consumer.books
            return [
                a
                for a in reversed(found)  # the store lists newest first
                if a.device_id is None
                and a.loan_id is not None
                and (a.loan_id not in books or a.id not in books[a.loan_id].risk.alert_ids)
            ]

    def metric_lines(self) -> list[str]:
        """Loans by risk tier, and the long stays held for risk-site discovery."""
        with self.lock:
            tiers = self.consumer.tier_counts()
            stays = self.consumer.sites.stays()
        return [
            *labelled_gauge_lines(
                "pledgewatch_loans_by_tier",
                "Loans the consumer knows, by risk tier.",
                "tier",
                tiers,
            ),
            *gauge_lines(
                "pledgewatch_risk_site_stays",
                "Long stays held for risk-site discovery ((cell, loan) aggregates).",
                stays,
            ),
        ]

    def restore(self, store: Store) -> None:
        """Load the consumer's state from the store (at start)."""
        books = store.load_consumer_rows(LOANS)
        cells = store.load_consumer_rows(SITES)
        with self.lock:
            self.consumer.restore(books, cells)
