"""The loans a pipeline knows: by id, by VIN and by tracker, each tracker's loan resolved.

One book can serve many pipelines: a distributed worker's stages share one
(`engine.distributed.partitions`), so a worker holds each loan once however many partitions
it steps, and taking a partition costs nothing per loan. What a change means for a
pipeline's own devices (their timers) is the pipeline's part (`Pipeline.loan_changed`).
"""

from __future__ import annotations

from lending.model import Loan


class LoanBook:
    """Loans by id; `by_device` is the tracker -> loan view the core reads (`Context`)."""

    def __init__(self) -> None:
        self.loans: dict[str, Loan] = {}
        self.by_device: dict[str, Loan] = {}  # kept up to date in place: contexts hold it
        self._ids_by_device: dict[str, set[str]] = {}
        self._ids_by_vin: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self.loans)

    def same_vin(self, loan: Loan) -> list[Loan]:
        """The stored loans `loan` is judged against for VIN conflicts: those with its VIN,
        and its stored version if that had another VIN."""
        stored = [self.loans[i] for i in self._ids_by_vin.get(loan.vin, ())]
        old = self.loans.get(loan.loan_id)
        if old is not None and old.vin != loan.vin:
            stored.append(old)
        return stored

    def put(self, loan: Loan) -> set[str]:
        """Add or replace a loan; the trackers whose loan may have changed (its own, and those
        its stored version had)."""
        old = self.loans.get(loan.loan_id)
        self.loans[loan.loan_id] = loan
        if old is not None:
            self._ids_by_vin[old.vin].discard(old.loan_id)
            for device_id in old.device_ids:
                self._ids_by_device[device_id].discard(old.loan_id)
        self._ids_by_vin.setdefault(loan.vin, set()).add(loan.loan_id)
        for device_id in loan.device_ids:
            self._ids_by_device.setdefault(device_id, set()).add(loan.loan_id)
        touched = {*loan.device_ids, *(old.device_ids if old else ())}
        for device_id in touched:
            # a tracker moved between loans belongs to its active loan (ties: the larger id)
            claimants = [self.loans[i] for i in self._ids_by_device[device_id]]
            if claimants:
                self.by_device[device_id] = max(claimants, key=lambda ln: (ln.active, ln.loan_id))
            else:
                del self.by_device[device_id]
        return touched
