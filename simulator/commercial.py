"""The simulated fleet's commercial side: contracts, monthly invoices and exchange rates, in the
CSV layouts of ``basewatch import contracts|invoices|fx`` (see the README).

Per account: an Air-as-a-Service contract (metered, price per m³ with a monthly minimum), a
maintenance subscription (fixed fee per machine, billed monthly or yearly) and a monitoring
add-on. Stories change them: a growing account adds a machine (its maintenance fee starts that
month), a heat-recovery buyer adds the heat-recovery module, a declining account ends every
contract at its churn month, a third-party buyer drops the maintenance subscription after a year
of buying its own parts. Invoices bill each month's delivered volume (the customer's own meter,
so gaps in telemetry do not lower the bill), the fixed fees, one-off installation and spare-part
charges and VAT; one-offs and taxes are not recurring revenue.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from simulator.fleet import AccountSpec, Fleet, month_start

CENT = Decimal("0.01")
VAT = Decimal("0.20")
MAINTENANCE_FEE_PER_MACHINE = Decimal(180)
MONITORING_FEE_PER_MACHINE = Decimal(35)
HEAT_RECOVERY_FEE = Decimal(650)
CONTRACT_COLUMNS = (
    "contract_id",
    "account_id",
    "product_line",
    "kind",
    "currency",
    "start_date",
    "end_date",
    "billing_period",
    "fee",
    "unit_price",
    "unit",
    "monthly_minimum",
    "renewal",
    "notice_days",
    "term_months",
)
INVOICE_COLUMNS = (
    "invoice_id",
    "line_no",
    "account_id",
    "contract_id",
    "period",
    "issue_date",
    "amount",
    "currency",
    "recurring",
    "kind",
    "quantity",
    "unit",
    "description",
)
FX_COLUMNS = ("month", "currency", "rate")


@dataclass(frozen=True)
class Contract:
    contract_id: str
    account_id: str
    product_line: str
    kind: str  # fixed | metered | addon
    currency: str
    start: dt.date
    end: dt.date | None
    billing_period: str  # month | quarter | year
    fee: Decimal | None
    unit_price: Decimal | None
    monthly_minimum: Decimal | None

    def row(self) -> dict[str, object]:
        return {
            "contract_id": self.contract_id,
            "account_id": self.account_id,
            "product_line": self.product_line,
            "kind": self.kind,
            "currency": self.currency,
            "start_date": self.start.isoformat(),
            # the last day of service (the contract is not active in its end month)
            "end_date": (self.end - dt.timedelta(days=1)).isoformat() if self.end else "",
            "billing_period": self.billing_period,
            "fee": self.fee or "",
            "unit_price": self.unit_price or "",
            "unit": "m3" if self.kind == "metered" else "",
            "monthly_minimum": self.monthly_minimum or "",
            "renewal": "auto",
            "notice_days": 90,
            "term_months": "",
        }

    def active(self, month: dt.date) -> bool:
        return self.start <= month and (self.end is None or month < self.end)


def _money(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def contracts_for(fleet: Fleet, account: AccountSpec, volumes: list[float]) -> list[Contract]:
    """The account's contracts over the window (dates are month starts)."""
    rng = random.Random(f"{fleet.seed}:contracts:{account.account_id}")

    def month(m: int) -> dt.date:
        return month_start(fleet.start, m).date()

    machines = [a for a in fleet.assets if a.account_id == account.account_id]
    initial = [a for a in machines if a.start_month <= account.start_month]
    start = month(account.start_month) if account.start_month else month(-rng.randint(6, 40))
    end = month(account.churn_month) if account.churn_month is not None else None
    price = Decimal(str(round(rng.uniform(0.016, 0.024), 4)))
    baseline = (
        sum(volumes[account.start_month : account.start_month + 3]) / 3 if any(volumes) else 0.0
    )
    minimum = _money(0.6 * baseline * float(price))
    prefix = f"K-{account.account_id}"
    contracts = [
        Contract(
            f"{prefix}-aas",
            account.account_id,
            "air_as_a_service",
            "metered",
            account.currency,
            start,
            end,
            "month",
            None,
            price,
            minimum,
        ),
        Contract(
            f"{prefix}-maint",
            account.account_id,
            "maintenance",
            "fixed",
            account.currency,
            start,
            month(account.event_month + 6) if account.story == "third_party" else end,
            rng.choice(("month", "month", "year")),
            MAINTENANCE_FEE_PER_MACHINE * len(initial),
            None,
            None,
        ),
        Contract(
            f"{prefix}-mon",
            account.account_id,
            "monitoring",
            "addon",
            account.currency,
            start,
            end,
            "month",
            MONITORING_FEE_PER_MACHINE * len(initial),
            None,
            None,
        ),
    ]
    for added in (a for a in machines if a.start_month > account.start_month):
        contracts.append(
            Contract(
                f"{prefix}-maint-{added.asset_id}",
                account.account_id,
                "maintenance",
                "fixed",
                account.currency,
                month(added.start_month),
                end,
                "month",
                MAINTENANCE_FEE_PER_MACHINE,
                None,
                None,
            )
        )
    if account.buys_heat_recovery:
        contracts.append(
            Contract(
                f"{prefix}-hr",
                account.account_id,
                "heat_recovery",
                "addon",
                account.currency,
                month(account.event_month),
                end,
                "month",
                HEAT_RECOVERY_FEE,
                None,
                None,
            )
        )
    for contract in contracts:  # fees in the billing period's terms
        if contract.billing_period == "year" and contract.fee is not None:
            object.__setattr__(contract, "fee", contract.fee * 12)
    return contracts


def invoices_for(
    fleet: Fleet, account: AccountSpec, contracts: list[Contract], volumes: list[float]
) -> list[dict[str, object]]:
    """Monthly invoices (one per account and month, several lines) over the window."""
    rng = random.Random(f"{fleet.seed}:invoices:{account.account_id}")
    lines: list[dict[str, object]] = []
    for m in range(fleet.months):
        period = month_start(fleet.start, m).date()
        issue = (month_start(fleet.start, m + 1) + dt.timedelta(days=4)).date()
        invoice_id = f"INV-{account.account_id}-{period:%Y%m}"
        items: list[tuple[Contract | None, str, Decimal, bool, str, str]] = []
        for contract in contracts:
            if not contract.active(period):
                continue
            if contract.kind == "metered":
                assert contract.unit_price is not None
                volume = Decimal(str(round(volumes[m], 1)))
                amount = max(
                    _money(volume * contract.unit_price), contract.monthly_minimum or Decimal(0)
                )
                items.append(
                    (contract, "metered", amount, True, str(volume), f"compressed air {volume} m3")
                )
            elif contract.billing_period == "year":
                if (period.month - contract.start.month) % 12 == 0:
                    assert contract.fee is not None
                    items.append(
                        (
                            contract,
                            contract.kind,
                            contract.fee,
                            True,
                            "",
                            f"{contract.product_line} annual fee",
                        )
                    )
            else:
                assert contract.fee is not None
                items.append(
                    (
                        contract,
                        contract.kind,
                        contract.fee,
                        True,
                        "",
                        f"{contract.product_line} monthly fee",
                    )
                )
        if account.start_month and m == account.start_month:
            items.append((None, "one_off", Decimal(2500), False, "", "installation"))
        if items and rng.random() < 0.15:
            items.append(
                (None, "one_off", _money(rng.uniform(150, 1800)), False, "", "spare parts")
            )
        if not items:
            continue
        net = sum((amount for _, _, amount, _, _, _ in items), Decimal(0))
        items.append((None, "tax", _money(net * VAT), False, "", "VAT 20%"))
        for line_no, (source, kind, amount, recurring, quantity, text) in enumerate(items, 1):
            lines.append(
                {
                    "invoice_id": invoice_id,
                    "line_no": line_no,
                    "account_id": account.account_id,
                    "contract_id": source.contract_id if source else "",
                    "period": f"{period:%Y-%m}",
                    "issue_date": issue.isoformat(),
                    "amount": amount,
                    "currency": account.currency,
                    "recurring": "true" if recurring else "false",
                    "kind": kind,
                    "quantity": quantity,
                    "unit": "m3" if quantity else "",
                    "description": text,
                }
            )
    return lines


def fx_rates(fleet: Fleet, reporting: str = "EUR") -> list[dict[str, object]]:
    """Monthly rates (reporting currency per unit) for GBP and USD, a seeded random walk."""
    rng = random.Random(f"{fleet.seed}:fx")
    rows: list[dict[str, object]] = []
    level = {"GBP": 1.17, "USD": 0.92}
    for m in range(fleet.months):
        period = month_start(fleet.start, m).date()
        rows.append({"month": f"{period:%Y-%m}", "currency": reporting, "rate": "1"})
        for currency, rate in list(level.items()):
            level[currency] = rate * (1 + rng.gauss(0, 0.012))
            month = f"{period:%Y-%m}"
            rows.append({"month": month, "currency": currency, "rate": f"{level[currency]:.6f}"})
    return rows
