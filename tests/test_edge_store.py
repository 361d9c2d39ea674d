"""The gateway store: sequence numbers, outbox order, delivery on acknowledgement."""

from edge.store import EdgeStore


def test_seqs_are_unique_and_survive_reopen(tmp_path):
    db = tmp_path / "g.sqlite"
    s = EdgeStore(db)
    a = s.add_readings("2026-01-01T00:00:00.000+00:00", "d", [("p", 1.0, "good", "m")] * 3)
    e = s.add_event("alarm1", "alarm", "raised", severity="critical")
    s.close()
    s = EdgeStore(db)
    b = s.add_readings("2026-01-01T00:00:01.000+00:00", "d", [("p", 2.0, "good", "m")])
    assert a == [1, 2, 3] and e == 4 and b == [5]


def test_events_go_first_and_ack_removes_exactly_the_ranges(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    s.add_readings("2026-01-01T00:00:00.000+00:00", "d", [("p", float(i), "good", "m")
                                                          for i in range(5)])
    s.add_event("leak", "alarm", "raised", value=1.0)
    batch = s.outbox_batch(3, exclude=set())
    assert [r["seq"] for r in batch] == [6, 1, 2]
    assert batch[0]["kind"] == "event" and batch[0]["value"] == 1.0
    assert [r["seq"] for r in s.outbox_batch(3, exclude={6, 1})] == [2, 3, 4]
    assert s.mark_delivered([[1, 2], [6, 6]]) == 3
    assert s.outbox_depth() == 3
    # Delivered records stay stored: the outbox is only what is not yet confirmed.
    assert s.conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 5


def test_ack_requests_round_trip(tmp_path):
    s = EdgeStore(tmp_path / "g.sqlite")
    s.request_ack("leak", who="operator")
    assert s.take_ack_requests() == [("leak", "operator")]
    assert s.take_ack_requests() == []
