"""The lending consumer: risk, learned places, mileage and risk sites, fed by the engine.

This is the seam of DESIGN §8. A runtime hands the consumer, in order per loan, every
accepted reading of a loan's trackers (`on_reading`) and every alert about the loan
(`on_alert`), with the runtime clock only for `detected_at`. What the consumer raises
(`risk.tier_changed`) goes back to the runtime, which writes it to the outbox with the
batch; the rows of its durable state (`take_rows`) go into the same transaction. The local
engine, the replay and the distributed workers use it alike; nothing here reads a clock,
does I/O or knows which runtime feeds it.

State per loan is a `LoanBook`: a risk fold, the learned places and the odometer of the
loan's primary tracker (the first of its trackers that sent a fix). Across the fleet, one
`SiteIndex` of long stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from alerts.model import Alert, AlertType, Detail
from devices.readings import GpsFix, Reading
from lending.collateral import Odometer, collateral_json, collateral_value, price_json
from lending.model import Loan, Vehicle
from lending.params import DEFAULT_PARAMS, TIERS, LendingParams
from lending.places import FinishedStay, Places
from lending.risk import (
    FINDING_PREFIX,
    RISK_ALERT_TYPES,
    Condition,
    RiskState,
    add_alert,
    add_points,
    evaluate,
    risk_from_json,
    risk_to_json,
    set_conditions,
    tier_changed,
)
from lending.sites import Candidate, IsMarked, SiteIndex, candidate_weight

LOANS = "loans"
"""The consumer name of the per-loan rows."""
SITES = "sites"
"""The consumer name of the risk-site grid cells."""
BOOK_VERSION = 1

Row = tuple[str, str, dict[str, object] | None]
"""(consumer name, key, document or None to delete): one durable state row."""


@dataclass(slots=True)
class LoanBook:
    """What the consumer knows of one loan."""

    loan_id: str
    places: Places
    risk: RiskState
    odometer: Odometer
    primary: str | None = None  # the tracker whose fixes teach places and mileage
    clock_ms: int = -1  # the latest event time of the loan

    def to_json(self) -> dict[str, object]:
        """A JSON-able, versioned snapshot."""
        return {
            "v": BOOK_VERSION,
            "primary": self.primary,
            "clock_ms": self.clock_ms,
            "risk": risk_to_json(self.risk),
            "places": self.places.to_json(),
            "odometer": self.odometer.to_json(),
        }

    @classmethod
    def from_json(cls, loan_id: str, doc: Mapping[str, object]) -> LoanBook:
        """Restore a snapshot of `to_json`."""
        if doc.get("v") != BOOK_VERSION:
            msg = f"loan book {loan_id}: version {doc.get('v')!r}, this build reads {BOOK_VERSION}"
            raise ValueError(msg)
        places, odometer, clock = doc["places"], doc["odometer"], doc["clock_ms"]
        if not isinstance(places, dict) or not isinstance(odometer, list):
            msg = f"loan book {loan_id}: malformed places or odometer"
            raise ValueError(msg)  # noqa: TRY004  # a malformed document
        primary = doc.get("primary")
        return cls(
            loan_id,
            Places.from_json(places),
            risk_from_json(doc["risk"]),
            Odometer.from_json(odometer),
            primary if isinstance(primary, str) else None,
            clock if isinstance(clock, int) else -1,
        )


class LendingConsumer:
    """Risk tiers, learned places, collateral and risk sites for a fleet of loans."""

    def __init__(self, params: LendingParams = DEFAULT_PARAMS) -> None:
        self.params = params
        self.books: dict[str, LoanBook] = {}
        self.sites = SiteIndex(params.sites)
        self._dirty: set[str] = set()
        self.alert_types: frozenset[AlertType] = RISK_ALERT_TYPES  # the alerts it folds
        self._parked_kmh = params.places.parked_max_speed_kmh  # read per fix: bound once
        self._collateral = params.collateral
        # Whether a place is a marked `risk_site` already: the runtime's fence index tells
        # (`engine.runtime.consumers` sets it); none is marked without one.
        self.is_marked: IsMarked = lambda _lat, _lon, _radius_m: False

    def _book(self, loan: Loan) -> LoanBook:
        book = self.books.get(loan.loan_id)
        if book is None:
            book = LoanBook(
                loan.loan_id, Places(loan.tz or self.params.default_tz), RiskState(), Odometer()
            )
            self.books[loan.loan_id] = book
        return book

    # -- the feed
    def on_reading(self, loan: Loan, reading: Reading, now_ms: int) -> list[Alert]:
        """Fold an accepted reading of one of the loan's trackers."""
        # The hot path of the consumer: one call per reading, little else (replay budget).
        book = self.books.get(loan.loan_id) or self._book(loan)
        self._dirty.add(book.loan_id)
        ts_ms = reading.ts_ms
        if ts_ms > book.clock_ms:  # noqa: PLR1730  # an `if` is cheaper than max() here
            book.clock_ms = ts_ms
        if type(reading) is GpsFix:
            if book.primary is None:
                book.primary = reading.device_id
            places = book.places
            if reading.device_id == book.primary and ts_ms > places.last_fix_ms:
                ignition = reading.ignition
                parked = ignition is False or (
                    ignition is None
                    and (reading.speed_kmh is None or reading.speed_kmh <= self._parked_kmh)
                )
                book.odometer.observe(
                    ts_ms, reading.lat, reading.lon, reading.odometer_km, self._collateral
                )
                if parked or places.stay is not None or ts_ms >= places.close_at_ms:
                    finished, closed = places.observe(
                        ts_ms, reading.lat, reading.lon, parked, self.params.places
                    )
                    if finished is not None:
                        self._file_stay(loan, book, finished)
                    if closed:
                        self._set_conditions(loan, book)
                        return self._evaluate(loan, book, now_ms, reading.device_id)
                else:  # driving, no stay to end, no day to close: only the time moves
                    places.last_fix_ms = ts_ms
        if book.clock_ms >= book.risk.next_eval_ms:
            return self._evaluate(loan, book, now_ms, reading.device_id)
        return []

    def _file_stay(self, loan: Loan, book: LoanBook, finished: FinishedStay) -> None:
        """Tell risk-site discovery of a finished stay, unless at the car's own home or
        work; when the place is a candidate now, every loan parked there gets its points."""
        if self.params.sites.skip_home_work and finished.cid is not None:
            own = (book.places.home(), book.places.work())
            if any(place is not None and place.cid == finished.cid for place in own):
                return
        sites = self.sites
        if not sites.add_stay(
            loan.loan_id, finished.lat, finished.lon, finished.start_ms, finished.end_ms
        ):
            return
        members = sites.loans_near(finished.lat, finished.lon)
        if len(members) < self.params.sites.min_loans or self.is_marked(
            finished.lat, finished.lon, self.params.sites.radius_m
        ):
            return
        cell = sites.key_of(sites.cell_of(finished.lat, finished.lon))
        p = self.params
        for member, longest_ms in members.items():
            other = self.books.get(member)
            weight = candidate_weight(longest_ms, p.sites)
            if other is None or weight <= 0.0:
                continue
            evidence: dict[str, Detail] = {
                "lat": round(finished.lat, 6),
                "lon": round(finished.lon, 6),
                "loans": len(members),
                "longest_stay_min": round(longest_ms / 60_000),
                "other_loan_ids": [m for m in members if m != member][:10],
            }
            # one finding per (place, loan), stamped with the stay that made it a candidate
            risk = add_points(
                other.risk,
                "risk_site_candidate",
                finished.end_ms,
                f"{FINDING_PREFIX}site:{cell}:{member}",
                evidence,
                p.risk,
                weight,
            )
            if risk is not other.risk:
                other.risk = replace(risk, next_eval_ms=0)  # judged at its next event
                self._dirty.add(member)

    def on_alert(self, loan: Loan, alert: Alert, now_ms: int) -> list[Alert]:
        """Fold an alert about the loan (its trackers' or its own)."""
        if alert.type not in self.alert_types:
            return []
        book = self._book(loan)
        risk = add_alert(book.risk, alert, self.params.risk)
        if risk is book.risk:
            # seen before (or faded, or older than the ledger keeps): judging the loan now
            # would stamp a tier change with a moment a run without this alert would not
            return []
        self._dirty.add(loan.loan_id)
        book.clock_ms = max(book.clock_ms, alert.ts_ms)
        book.risk = risk
        return self._evaluate(loan, book, now_ms, alert.device_id)

    def _set_conditions(self, loan: Loan, book: LoanBook) -> None:
        p = self.params
        pts = p.risk.points
        conditions = [
            Condition(code, pts.get(code, 0.0), evidence)
            for code, evidence in book.places.conditions(loan.home, p.places)
        ]
        rate = book.odometer.km_per_day(book.clock_ms, p.collateral)
        if rate is not None and rate > p.collateral.mileage_high_km_per_day:
            evidence = {"km_per_day": round(rate, 1), "driven_km": round(book.odometer.driven_km())}
            conditions.append(Condition("mileage_high", pts.get("mileage_high", 0.0), evidence))
        book.risk = set_conditions(book.risk, conditions)

    def _evaluate(
        self, loan: Loan, book: LoanBook, now_ms: int, device_id: str | None
    ) -> list[Alert]:
        """Judge the loan now; `risk.tier_changed` names `device_id`, the tracker whose
        event it was judged at (None for a loan's own event, such as a PUT's conflict). A
        clean loan (no points, no condition, `low`) has nothing to judge: its `as_of` stays
        that of its last judgement (null if none)."""
        risk = book.risk
        if risk.idle:
            every_ms = self.params.risk.reevaluate_every_s * 1000
            book.risk = replace(risk, next_eval_ms=book.clock_ms + every_ms)
            return []
        risk, old_tier = evaluate(book.risk, book.clock_ms, self.params.risk)
        book.risk = risk
        if risk.tier == old_tier:
            return []
        fix = book.odometer.last_fix
        where = None if fix is None else (fix[1], fix[2])
        return [tier_changed(loan, risk, old_tier, now_ms, self.params.risk, where, device_id)]

    # -- durable state
    def take_rows(self) -> list[Row]:
        """The state rows changed since the last call: the books, then the site cells."""
        rows: list[Row] = [
            (LOANS, loan_id, self.books[loan_id].to_json())
            for loan_id in sorted(self._dirty)
            if loan_id in self.books
        ]
        self._dirty.clear()
        rows += [(SITES, key, doc) for key, doc in self.sites.take_dirty()]
        return rows

    def forget_dirty(self) -> None:
        """Drop the record of what changed (a runtime that stores nothing: the replay)."""
        self._dirty.clear()
        self.sites.dirty.clear()

    def restore(
        self,
        books: Iterable[tuple[str, Mapping[str, object]]],
        cells: Iterable[tuple[str, dict[str, object]]],
    ) -> None:
        """Load the rows of `take_rows` (as the store returns them)."""
        self.books = {loan_id: LoanBook.from_json(loan_id, doc) for loan_id, doc in books}
        self.sites.restore(cells)
        self._dirty.clear()

    # -- what the API shows
    def tier(self, loan_id: str) -> str:
        """The loan's tier (`low` for a loan with no events yet)."""
        book = self.books.get(loan_id)
        return "low" if book is None else book.risk.tier_name

    def tier_counts(self) -> dict[str, int]:
        """How many loans the consumer knows per tier (every tier named, zeros included)."""
        counts = dict.fromkeys(TIERS, 0)
        for book in self.books.values():
            counts[book.risk.tier_name] += 1
        return counts

    def loan_view(self, loan: Loan) -> dict[str, object]:
        """`risk`, `collateral` and `price` of `GET /v1/loans/{id}`."""
        book = self.books.get(loan.loan_id)
        risk = RiskState() if book is None else book.risk
        at_ms = None if book is None or book.clock_ms < 0 else book.clock_ms
        mileage = (
            (loan.vehicle.mileage_km if loan.vehicle else None)
            if book is None
            else book.odometer.mileage_km(loan.vehicle)
        )
        return self._priced(risk, loan.vehicle, loan.principal, mileage, at_ms)

    def _priced(
        self,
        risk: RiskState,
        vehicle: Vehicle | None,
        principal: float | None,
        mileage_km: float | None,
        at_ms: int | None,
    ) -> dict[str, object]:
        collateral = collateral_json(vehicle, principal, mileage_km, at_ms, self.params)
        value = collateral_value(vehicle, mileage_km, at_ms, self.params.collateral)
        ltv = collateral["ltv"]
        return {
            "risk": risk.to_json(),
            "collateral": collateral,
            "price": price_json(
                risk.tier_name, ltv if isinstance(ltv, float) else None, value, self.params
            ),
        }

    def quote(
        self, vehicle: Vehicle, principal: float, loan_id: str | None, at_ms: int
    ) -> dict[str, object]:
        """`POST /v1/quotes`: price a prospective loan, with a known loan's history if any."""
        book = None if loan_id is None else self.books.get(loan_id)
        risk = RiskState() if book is None else book.risk
        mileage = vehicle.mileage_km if book is None else book.odometer.mileage_km(vehicle)
        return self._priced(risk, vehicle, principal, mileage, at_ms)

    def places(self, loan_id: str) -> list[dict[str, object]]:
        """`GET /v1/loans/{id}/places`."""
        book = self.books.get(loan_id)
        return [] if book is None else book.places.listing(self.params.places)

    def candidates(self, is_marked: IsMarked) -> list[Candidate]:
        """`GET /v1/risk-sites/candidates`."""
        return self.sites.candidates(is_marked)
