"""Commissioning logic: order names, unit ranges, read options, the poll plan and load.

The bus-load figures are worked out here by hand from the frame sizes of the Modbus
RTU specification, not by calling the code under test.
"""

from pathlib import Path

import pytest

from drivers.codec import encode
from drivers.device import ReadBlock
from drivers.rtu import RtuMaster
from edge.config import load_config, parse_config
from groundwatch.cli import EXIT_CONFIG, main
from groundwatch.commission import (
    ORDERS,
    UsageError,
    bus_from_options,
    decode_value,
    parse_endpoint,
    parse_units,
    register_request,
)
from groundwatch.poll_plan import (
    format_plan,
    inter_frame_silence_s,
    plan_site,
    read_line_s,
    transaction_line_s,
)

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"

# Float32 10.0 (0x41200000) in each layout: the golden vectors of docs/profiles.md.
FLOAT_10 = {
    "ABCD": [0x4120, 0x0000],
    "CDAB": [0x0000, 0x4120],
    "BADC": [0x2041, 0x0000],
    "DCBA": [0x0000, 0x2041],
}
# Int32 0x01020304: byte A = 01 ... D = 04, laid out letter by letter.
INT_1234 = {
    "ABCD": [0x0102, 0x0304],
    "CDAB": [0x0304, 0x0102],
    "BADC": [0x0201, 0x0403],
    "DCBA": [0x0403, 0x0201],
}


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_order_names_map_to_codec_byte_and_word_order(order):
    req = register_request(1, 3, 0, type_name="float32", order=order)
    assert decode_value(req, FLOAT_10[order]) == 10.0
    req = register_request(1, 3, 0, type_name="uint32", order=order)
    assert decode_value(req, INT_1234[order]) == 0x01020304
    # And the other way round: codec.encode with the mapped orders gives the layout.
    assert encode(10.0, "float32", *ORDERS[order]) == FLOAT_10[order]


def test_order_table():
    assert ORDERS == {
        "ABCD": ("big", "big"),
        "CDAB": ("big", "little"),
        "BADC": ("little", "big"),
        "DCBA": ("little", "little"),
    }
    assert register_request(1, 3, 0, type_name="float32", order="cdab").order == "CDAB"


def test_signed_scaled_int16():
    req = register_request(1, 3, 0, type_name="int16", scale=0.1)
    assert decode_value(req, [0xFFFF]) == pytest.approx(-0.1)
    assert decode_value(req, [0x10000 - 253]) == pytest.approx(-25.3)
    req = register_request(1, 3, 0, type_name="uint16", scale=0.1, offset=-10)
    assert decode_value(req, [0xFFFF]) == pytest.approx(6543.5)
    assert decode_value(register_request(1, 3, 0, type_name="int16"), [0x8000]) == -32768


def test_raw_and_string_reads():
    req = register_request(1, 4, 7, count=3)
    assert (req.table, req.address, req.count) == ("input", 7, 3)
    assert decode_value(req, [1, 2, 3]) == [1, 2, 3]
    text = register_request(1, 3, 0, type_name="string", count=2)
    assert decode_value(text, [0x4142, 0x4300]) == "ABC"
    swapped = register_request(1, 3, 0, type_name="string", count=2, order="BADC")
    assert decode_value(swapped, [0x4241, 0x0043]) == "ABC"
    assert register_request(1, 3, 0, type_name="string").count == 8
    assert register_request(1, 3, 0, type_name="float64").count == 4
    bits = register_request(3, 1, 0, count=8)
    assert (bits.table, bits.count) == ("coil", 8)


@pytest.mark.parametrize("kwargs,message", [
    ({"type_name": "float32", "count": 3}, "float32 is 2 register(s)"),
    ({"count": 126}, "not within 1..125"),
    ({"count": 0}, "not within 1..125"),
    ({"function": 1, "type_name": "int16"}, "reads bits"),
    ({"function": 6}, "use 1, 2, 3 or 4"),
    ({"order": "ACBD", "type_name": "int32"}, "--order ACBD"),
    ({"scale": 0.1}, "need a numeric --type"),
    ({"address": 65535, "type_name": "int32"}, "past the address space"),
])
def test_read_options_that_do_not_fit(kwargs, message):
    args = {"unit": 1, "function": 3, "address": 0, **kwargs}
    with pytest.raises(UsageError) as err:
        register_request(**args)
    assert message in str(err.value)


def test_unit_ranges():
    assert parse_units("1-10,17") == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17]
    assert parse_units("5") == [5]
    assert parse_units("3, 1-2, 3") == [3, 1, 2]
    assert parse_units("1-247") == list(range(1, 248))
    assert parse_units("0") == [0]


@pytest.mark.parametrize("text", ["", "a", "1-", "10-1", "1-248", "-3", "1,,x"])
def test_bad_unit_ranges(text):
    with pytest.raises(UsageError):
        parse_units(text)


def test_endpoints_and_buses():
    assert parse_endpoint("127.0.0.1:5020") == ("127.0.0.1", 5020)
    assert parse_endpoint("gw.local") == ("gw.local", 502)
    for bad in ("host:x", ":502", "host:0"):
        with pytest.raises(UsageError):
            parse_endpoint(bad)
    bus = bus_from_options(rtu="/dev/ttyUSB0", baudrate=19200, parity="E")
    assert (bus.kind, bus.serial_port, bus.baudrate, bus.parity) == (
        "rtu", "/dev/ttyUSB0", 19200, "E")
    bus = bus_from_options(rtu_over_tcp="10.0.0.5:4001", timeout_s=0.5)
    assert (bus.kind, bus.host, bus.port, bus.timeout_s) == (
        "rtu_over_tcp", "10.0.0.5", 4001, 0.5)
    with pytest.raises(UsageError):
        bus_from_options()
    with pytest.raises(UsageError):
        bus_from_options(tcp="a:1", rtu="/dev/ttyS0")
    with pytest.raises(UsageError, match="timeout_s"):
        bus_from_options(tcp="a:1", timeout_s=0)


@pytest.mark.parametrize("baud", [1200, 9600, 19200, 38400, 115200])
def test_silence_is_the_rtu_masters(baud):
    # RtuMaster only keeps its transport; it is never used here.
    assert inter_frame_silence_s(baud) == pytest.approx(RtuMaster(None, baud).silence_s)


def test_line_time_from_first_principles():
    # 9600 baud, 11-bit characters: 1 character = 11 / 9600 s = 1.1458 ms.
    # Read of 2 holding registers: request 8 bytes (unit, function, address 2,
    # count 2, CRC 2); reply 9 bytes (unit, function, byte count, 4 data, CRC 2).
    # 17 characters = 187 bits, plus two 3.5-character silences = 77 bits: 264 bits.
    assert read_line_s(ReadBlock("holding", 0, 2), 9600) == pytest.approx(264 / 9600)
    # 10 coils: reply 5 + 2 data bytes = 7 bytes: 15 characters + 7 = 22 x 11 bits.
    assert read_line_s(ReadBlock("coil", 0, 10), 9600) == pytest.approx(242 / 9600)
    # Above 19200 baud the silence is fixed at 1.75 ms: 21 bytes at 38400 baud.
    assert transaction_line_s(8, 13, 38400) == pytest.approx(231 / 38400 + 0.0035)


def test_plan_of_the_example_site():
    plans = {p.name: p for p in plan_site(load_config(EXAMPLE), healthy_refresh_s=2.0)}
    lan, wells = plans["plant-lan"], plans["wells-485"]

    # TCP: tank1 holding 0-13 every 2 s, cable1 input 0-9 every 1 s, relay1 coils
    # and discrete inputs every 2 s, plus the "gateway healthy" coil every 2 s:
    # 0.5 + 1 + 1 + 0.5 = 3 requests per second; no line load.
    assert [d.blocks for d in lan.devices] == [
        [ReadBlock("holding", 0, 14)],
        [ReadBlock("input", 0, 10)],
        [ReadBlock("coil", 0, 8), ReadBlock("discrete", 0, 4)],
    ]
    assert lan.requests_per_cycle == 4
    assert lan.requests_per_s == pytest.approx(3.0)
    assert lan.load is None

    # RTU at 19200 baud. well_probe numbers registers from 1: mw1 reads temperature
    # 47-48 (quality 51) and conductivity 56-57 (quality 60), wire 46..59 = 46+14;
    # mw2 reads level 38-39 (quality 42), wire 37..41 = 37+5. Each every 1 s.
    assert [d.blocks for d in wells.devices] == [
        [ReadBlock("holding", 46, 14)], [ReadBlock("holding", 37, 5)],
    ]
    # mw1: 8 + (5 + 28) = 41 bytes = 451 bits, + 2 x 3.5 x 11 = 77 bits: 528 bits.
    # mw2: 8 + (5 + 10) = 23 bytes = 253 bits, + 77 bits: 330 bits.
    # (528 + 330) / 19200 = 0.0446875 of each second: 4.47 %.
    assert wells.load == pytest.approx((528 + 330) / 19200)
    assert wells.requests_per_s == pytest.approx(2.0)
    assert not wells.overloaded


def site_with_one_rtu_probe(poll_interval_s: float) -> dict:
    return {
        "site": {"id": "s"}, "gateway": {"id": "g"},
        "buses": [{
            "name": "probes", "kind": "rtu", "serial_port": "/dev/ttyUSB0",
            "baudrate": 9600,
            "devices": [{"name": "wq1", "unit_id": 5, "profile": "water_quality_probe",
                         "poll_interval_s": poll_interval_s}],
        }],
    }


def test_overloaded_rtu_bus_warns(tmp_path):
    # water_quality_probe: holding 0-3 in one read. Request 8 bytes, reply 5 + 8 = 13:
    # 21 x 11 = 231 bits + 77 bits of silence = 308 bits = 32.08 ms at 9600 baud.
    # Every 50 ms that is 308 / 9600 / 0.05 = 64.2 % of the line.
    cfg = parse_config(site_with_one_rtu_probe(0.05), "site.toml", tmp_path)
    (plan,) = plan_site(cfg, healthy_refresh_s=2.0)
    assert plan.load == pytest.approx(308 / 9600 / 0.05)
    assert plan.overloaded
    text = "\n".join(format_plan([plan]))
    assert "line load 64.2% at 9600 baud" in text
    assert "warning: bus probes is 64% loaded" in text
    # Every second it is 3.2 %: no warning.
    cfg = parse_config(site_with_one_rtu_probe(1.0), "site.toml", tmp_path)
    (plan,) = plan_site(cfg, healthy_refresh_s=2.0)
    assert "warning" not in "\n".join(format_plan([plan]))


@pytest.mark.parametrize("command", ["check-config", "check"])
def test_check_config_prints_the_plan(command, capsys):
    assert main([command, "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("2 buses, 5 devices, 39 points, 4 alarms, 3 relays: OK")
    assert out[1:] == [
        "bus plant-lan: TCP 127.0.0.1:5020",
        "  tank1 (unit 1, tank_gauge) every 2 s: 1 read(s) per poll: holding 0+14",
        "  cable1 (unit 2, leak_cable) every 1 s: 1 read(s) per poll: input 0+10",
        "  relay1 (unit 3, relay_module) every 2 s: 2 read(s) per poll: coil 0+8, "
        "discrete 0+4",
        "  per cycle 4 read(s); 3.00 requests/s (with 0.50/s healthy-relay writes)",
        "bus wells-485: RTU /tmp/groundwatch-wells 19200 8E1",
        "  mw1 (unit 1, well_probe) every 1 s: 1 read(s) per poll: holding 46+14",
        "  mw2 (unit 2, well_probe) every 1 s: 1 read(s) per poll: holding 37+5",
        "  per cycle 2 read(s); 2.00 requests/s; line load 4.5% at 19200 baud",
    ]


def test_overloaded_site_file_still_exits_0(tmp_path, capsys):
    site = tmp_path / "site.toml"
    site.write_text(
        '[site]\nid = "s"\n[gateway]\nid = "g"\n[[buses]]\nname = "probes"\n'
        'kind = "rtu"\nserial_port = "/dev/ttyUSB0"\nbaudrate = 9600\n'
        '[[buses.devices]]\nname = "wq1"\nunit_id = 5\n'
        'profile = "water_quality_probe"\npoll_interval_s = 0.05\n'
    )
    assert main(["check-config", "--config", str(site)]) == 0
    assert "warning: bus probes is 64% loaded" in capsys.readouterr().out


def test_check_config_errors_name_the_key_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "site.toml"
    bad.write_text(EXAMPLE.read_text().replace("unit_id = 2", "unit_id = 999", 1))
    assert main(["check-config", "--config", str(bad)]) == EXIT_CONFIG
    assert "buses[0].devices[1].unit_id" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["read", "--tcp", "127.0.0.1:1"], "--register is required"),
    (["read", "--device", "tank1", "--register", "0", "--tcp", "a:1"], "need --config"),
    (["read", "--config", str(EXAMPLE)], "--config needs --device"),
    (["read", "--config", str(EXAMPLE), "--device", "nope"], "no device 'nope'"),
    (["read", "--config", str(EXAMPLE), "--device", "mw2", "--point", "temperature_c"],
     "reads no point 'temperature_c'"),
    (["scan", "--rtu", "/dev/null", "--units", "0-3"], "broadcast"),
    (["test-relay", "--config", str(EXAMPLE), "siren"], "no relay 'siren'"),
])
def test_usage_errors_exit_2_before_touching_a_bus(argv, message, capsys):
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
