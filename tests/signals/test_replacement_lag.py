"""The fleet's replacement lags and the promise they give (pure, hand-worked figures)."""

from __future__ import annotations

import pytest

from signals.replacement_lag import LagObservation, ReplacementLags


def _replaced(kind: str, *lags: float) -> list[LagObservation]:
    return [LagObservation(kind, lag, replaced=True) for lag in lags]


# ten filters replaced at -100, 0, 100, ... 800 h from their rated life: S falls by 0.1 at each
TEN = _replaced("filter", -100, 0, 100, 200, 300, 400, 500, 600, 700, 800)


def test_the_promise_covers_eighty_percent_of_those_still_in_service() -> None:
    lags = ReplacementLags.fit(TEN)
    # before the window opens (none of the ten replaced this early): no promise
    assert lags.promise("filter", -200) is None
    # at -100: 1 of 10 replaced, S = 0.9; 80 % of the other 9 needs S <= 0.18: at 700 (S 0.1)
    first = lags.promise("filter", -100)
    assert first is not None
    assert first.horizon_hours == pytest.approx(800)
    assert first.replaced_share == pytest.approx(0.1)
    assert (first.lag_p10_hours, first.lag_p90_hours) == (-100, 700)
    assert (first.replacements, first.basis) == (10, "filter")
    # at 250: S = 0.7, needs S <= 0.14: at 700 again, 450 h on
    middle = lags.promise("filter", 250)
    assert middle is not None
    assert middle.horizon_hours == pytest.approx(450)
    # at 650: S = 0.2, needs S <= 0.04: the last one, at 800
    late = lags.promise("filter", 650)
    assert late is not None
    assert late.horizon_hours == pytest.approx(150)
    # past every replacement on record: nothing to promise
    assert lags.promise("filter", 800) is None


def test_parts_still_in_service_are_censored_not_ignored() -> None:
    """Ten replaced at 0-90 h and ten still running at 1,000 h: a plain quantile of the
    replacements would promise the rest within 40 h; Kaplan-Meier sees that half the parts
    outlive every replacement on record and promises nothing."""
    observations = _replaced("filter", *range(0, 100, 10))
    observations += [LagObservation("filter", 1000.0, replaced=False)] * 10
    lags = ReplacementLags.fit(observations)
    # at 50 h: 6 of 20 replaced (S = 0.7); 80 % of the rest needs S <= 0.14, never reached
    assert lags.promise("filter", 50) is None
    # one censored part among the ten filters moves the figures: at risk 11, then 7 after it
    lags = ReplacementLags.fit([*TEN, LagObservation("filter", 150, replaced=False)])
    promise = lags.promise("filter", 250)  # S = 8/11 * 6/7 = 48/77; needs <= 9.6/77: at 700
    assert promise is not None
    assert promise.horizon_hours == pytest.approx(450)
    assert promise.replaced_share == pytest.approx(1 - 48 / 77)


def test_a_kind_with_few_replacements_uses_every_kind_together() -> None:
    lags = ReplacementLags.fit([*TEN, *_replaced("valve", 5000, 6000)])
    assert lags.knows("valve")
    promise = lags.promise("valve", 250)
    assert promise is not None
    assert promise.basis == "all kinds"
    assert promise.replacements == 12
    # pooled S at 250: 8 of 12 left; 80 % of them needs S <= 1.6/12: at 5000 (S 1/12)
    assert promise.horizon_hours == pytest.approx(4750)
    # too few replacements anywhere: the record knows nothing
    assert not ReplacementLags.fit(_replaced("valve", 5000, 6000)).knows("valve")
    assert ReplacementLags.fit(_replaced("valve", 5000, 6000)).promise("valve", 5500) is None
