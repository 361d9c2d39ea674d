"""Short outage campaign: one simulated hour without a broker, a leak during it."""

import pytest

from hil_tests.campaigns import outage, outage_ok

pytestmark = pytest.mark.hil


def test_one_simulated_hour_without_broker_relay_on_time_every_record_once_live_first(
        tmp_path):
    r = outage(tmp_path, hours=1.0, speed=400.0)
    assert not r["relay_before_leak"] and r["relay_within_two_polls"], r
    assert r["records_committed_during_outage"] > 200, r
    assert r["duplicates_in_cloud"] == 0 and r["missing_in_cloud"] == 0, r
    assert r["committed_missing_in_cloud"] == 0 and r["parked"] == 0, r
    # Live first: the first batch after the return carries the leak alarm and no
    # backlog; the backlog follows in order, flagged historical, within 5 s.
    assert r["leak_raised_in_first_batch"], r
    assert r["first_batch_historical_records"] == 0, r
    assert r["backlog_records"] > 0 and r["backlog_in_seq_order"], r
    assert r["first_backlog_record_after_return_s"] < 5, r
    assert r["latest_values_older_than_a_stored_reading"] == 0, r
    assert outage_ok(r)
