"""Short power-cut campaign: SIGKILL the gateway at random moments under load; the
database stays intact and the cloud ends with exactly the committed records."""

import pytest

from hil_tests.campaigns import power_cut

pytestmark = pytest.mark.hil


def test_twenty_random_kills_lose_and_double_nothing(tmp_path):
    result = power_cut(tmp_path, kills=20, seed=20261203)
    assert result["integrity_failures"] == 0
    assert result["alarm_events"] == 1
    assert result["records_committed_before_final_run"] > 500
    assert result["duplicates_in_cloud"] == 0
    assert result["committed_missing_in_cloud"] == 0
    assert result["missing_in_cloud"] == 0
    assert result["unknown_in_cloud"] == 0
