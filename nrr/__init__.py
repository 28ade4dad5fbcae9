"""nrr: recurring revenue from contracts and invoices, the MRR ledger, its movements, NRR/GRR.

nrr imports only ``core``. It reads telemetry through ``usage_daily_between`` (ingest's
documented interface) and the registry through ``accounts`` and ``assets``; every figure is
computed set-based in SQL, and the pure modules (``mrr_rules``, ``metrics``, ``charts``; the
contract, month and money rules are core's) restate the rules on plain data; the movements'
line-by-line oracle, which only the tests use, is tests/nrr/oracle.py.

Definitions (DESIGN.md, "NRR definitions", plus the decisions recorded here)
----------------------------------------------------------------------------
MRR (monthly recurring revenue, **usage-inclusive**) of an account, month and product line =
fixed MRR + metered MRR, in the reporting currency at that month's rate, rounded to the cent:

* **Fixed MRR**: the fee of each ``fixed`` or ``addon`` contract normalised to a month: fee / 1
  (month), / 3 (quarter), / 12 (year), / term_months (multi_year).
* **Metered MRR**: for each ``metered`` contract, a run rate normalised to an average month:
  max(billed usage ÷ the month's days × 30.4375, monthly_minimum), six decimals. 30.4375 is
  365.25 / 12, so the same usage every day is the same MRR in February (28 or 29 days) as in
  March (31): a steady customer neither "contracts" into February nor "expands" into March.
  The monthly minimum is a floor on that run rate (not on the bill): an invoice below the
  minimum counts at the minimum, and one that bills exactly the minimum in a short month is a
  run rate above it (the invoice does not say which part was usage). The *billed usage* comes
  from the *invoices* when recurring ``metered`` lines exist for that contract and service
  month (their sum, in the invoice currency; they win over telemetry), otherwise from
  *telemetry*: the month's ``usage_daily_between(...).volume_m3`` of the account's assets
  (current registry ownership; no telemetry = no usage, so the minimum) × unit_price, rounded
  to the cent. Telemetry only measures m³: a contract in another unit counts its minimum until
  invoices arrive. An account with two concurrent m³ contracts needs invoices, or each contract
  bills the account's whole volume. The divisor is always the month's days (DESIGN.md), also
  in the month a metered contract starts mid-month: that month's run rate covers part of a
  month's usage, so the next month shows expansion. What was billed is reconciled
  separately, in the report's ``reconciliation.csv`` (invoice lines as billed, beside the
  ledger's run rates).
* **Not MRR**: one-off lines (installation, spare parts) and taxes; recurring fixed/addon invoice
  lines are not read either (the contract says the fee, the invoice only bills it, annual fees
  in one month), they appear in the report's reconciliation.
* **Months in force (no pro-rating)**: a contract counts in month M when it is in force on M's
  last day: start_date <= last day and (end_date is empty or end_date >= last day). end_date is
  the last day of service. MRR is a run rate at month end, so a contract starting on the 20th
  counts in full for its first month and one ending on the 20th drops out of that month; both
  the inclusive (2024-06-30) and the exclusive (2024-07-01) habits of writing the end of June
  give the same months. Renewal terms (renewal, notice_days, term_months) are stored for renewal
  risk and do not extend a contract: end_date is the end of service actually agreed.
* **Usage billed for the month a metered contract ends mid-month** is not MRR, by the same
  rule: on the month's last day the contract is no longer in force, so its run rate then is 0
  and its MRR ends in that month (a churn, or a contraction when the account has other MRR),
  exactly as a fixed contract ending on the 20th. Counting the last partial month would book
  the churn a month late and treat a final bill as recurring. Those lines are not dropped
  silently: ``reconciliation.csv`` lists them ("of which metered, contract not in force at
  month end") beside what was invoiced.
* **Credits**: the month's billed usage is the net of the contract's recurring metered lines
  for the month, credits included (the service month they name is the month they correct). A
  credit larger than the month's usage nets below 0, which counts 0, so the contract's metered
  MRR is its monthly minimum (0 without one). DESIGN.md's movements look at MRR alone: an
  account left with no MRR that month churns, and reactivates with its next billed month. The
  ledger does not move a credit to other months (the invoice does not name them);
  ``reconciliation.csv`` lists such contract months ("of which metered, contract months
  billed at a net credit") so the churn can be read against them.
* **Precision**: local-currency MRR keeps six decimals (a fee / 12); reporting-currency figures
  are rounded to the cent per ledger line (fixed and metered separately), so all sums are exact.
* **Currency**: each contract has one currency; a currency change is a new contract (the old
  one ends, the new one starts). Each month converts at that month's rate from ``fx_rates``
  (units of the reporting currency per unit; the reporting currency at 1). A rate missing for a
  month and currency in use stops the rebuild with the list of missing rates.
* **Ledger span**: from the first month with a recurring invoice line (else the earliest
  contract start) to the last complete month. Its first month is the opening balance: it has no
  movements.

Movements (per account, month t against t-1): new (0 -> >0, never >0 before), reactivation
(0 -> >0 after an earlier month >0), expansion, contraction (still >0), churn (>0 -> 0), none.
Amounts are in **constant currency**: MRR_t at the rates of t-1 (per ledger line, rounded to the
cent) against MRR_{t-1}; ``fx`` = MRR_t - MRR_t at t-1 rates. Bridge: start + new + reactivation
+ expansion - contraction - churn + fx = end, to the cent. A currency without a rate at t-1 is
taken at t's rate (no fx effect).

Retention: month-over-month NRR = (start + expansion - contraction - churn) / start over accounts
with MRR_{t-1} > 0, GRR without expansion (both in constant currency). Trailing-12-month NRR =
Σ MRR_t / Σ MRR_{t-12} over the cohort with MRR_{t-12} > 0, GRR = Σ min(MRR_t, MRR_{t-12}) /
Σ MRR_{t-12}, logo retention = share of the cohort with MRR_t > 0; MRR_t is converted at the
rates of the window's first month (t-12), as MRR_{t-12} is, so a rate move is never retention
(an account whose MRR_t is 0 to the cent counts 0, as in the movements). An account that
churned and returned inside the window counts at its MRR_t. An empty cohort gives no figure
(None / null). Quarter over quarter is the same with a 3-month window (rates of t-3).

Attribution (``nrr.attribution``): expansion that followed an expansion alert acted on within
``BASEWATCH_ATTRIBUTION_WINDOW_DAYS`` is signal-influenced, churn with a risk alert open at the
start of the churn month is flagged, and "NRR without signal-influenced expansion" takes the
influenced expansion out of the NRR: association and bookkeeping, never a causal claim. Read
from the ``alert_outcomes`` view signals publishes; absent (None), not zero, when there are no
alerts.

CSV layouts (``basewatch import contracts|invoices|fx FILE``)
--------------------------------------------------------------
Header row required; columns in any order; an unknown column is an error; empty cell = none.
Every row is validated before anything is written; errors read ``file:line: column: message``.
Importing the same file twice changes nothing (upsert on the key). Ranges (``core.layouts``),
so that whatever imports also rebuilds: fee, monthly_minimum and invoice amount below 10^12 in
absolute value, unit_price below 10^6, quantity below 10^15, 0 < rate < 10^4, at most 12
decimal places, dates and months in the years 1900 to 2999, notice_days 0 to 3650, term_months
1 to 1200. A rebuild that overflows anyway (many huge contracts on one account) stops with an
``InputError`` naming the largest amounts.

contracts.csv, key contract_id (required columns marked *):
  contract_id*, account_id* (registered), product_line*, kind* (fixed|metered|addon),
  currency* (ISO 4217, 3 letters), start_date* (YYYY-MM-DD), end_date (last day of service;
  empty = open-ended), billing_period (month|quarter|year|multi_year; * for fixed and addon;
  metered: month or empty), fee (per billing period; * for fixed and addon, empty for metered),
  unit_price (* for metered), unit (metered; default m3), monthly_minimum (metered, in the
  currency), renewal (auto|manual|none, default none), notice_days, term_months (* for
  multi_year: the fee covers that many months).

invoices.csv, key (invoice_id, line_no):
  invoice_id*, line_no* (1, 2, ...), account_id*, contract_id (imported already; * for recurring
  metered lines), period* (YYYY-MM, the service month), issue_date (YYYY-MM-DD), amount*
  (net, may be negative for a credit), currency*, recurring* (true|false), kind*
  (fixed|metered|addon|one_off|tax; one_off and tax cannot be recurring), quantity, unit,
  description.

fx.csv, key (month, currency):
  month* (YYYY-MM), currency*, rate* (> 0: units of the reporting currency per 1 unit of
  currency; the reporting currency's own rate, if listed, must be 1).
"""
