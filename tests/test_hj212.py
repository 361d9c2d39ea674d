"""HJ 212 framing and CRC against the standard's example and packets from the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cloud.hj212 import Hj212Error, build, crc, flag, parse

# HJ 212-2017, Annex A: the standard's own example, CRC 1C80.
ANNEX_A = ("##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;"
           "MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80")

# Packets published in open-source HJ 212 projects: a parser's unit test
# (xiaoyao9184/hj-t212-parser), an interpreter's README (liruoyu2008/HJ212Interpreter)
# and a data logger's console log. Each is framed and checksummed by its sender, not by
# us; the CRC check below is what says our reading of the standard agrees with theirs.
FIELD_PACKETS = [
    "##0139ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817000;"
    "B01-Rtd=36.91;011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N&&4980",
    "##0162QN=20231008123340461;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;"
    "Flag=5;CP=&&DataTime=20231008123340;w01008-SampleTime=20231008123340,"
    "w01008-Rtd=123.456&&F441",
    "##0116QN=20220814021304000;ST=22;CN=2011;PW=123456;MN=;Flag=5;CP=&&"
    "DataTime=20220814021304;a50001-Rtd=0.00,a50001-Flag=B&&06C0",
]


def modbus_crc(data: bytes) -> int:
    """CRC-16/MODBUS, the CRC some implementations wrongly use for HJ 212."""
    reg = 0xFFFF
    for byte in data:
        reg ^= byte
        for _ in range(8):
            reg = (reg >> 1) ^ 0xA001 if reg & 1 else reg >> 1
    return reg


def test_annex_a_example():
    data = ANNEX_A[6:-4].encode()
    assert len(data) == 101 and crc(data) == 0x1C80
    packet = parse(ANNEX_A + "\r\n")
    assert packet.fields["CN"] == "1062" and packet.cp == [{"RtdInterval": "30"}]
    assert packet.version == 1 and packet.wants_answer  # Flag=5: 2017, answer wanted
    # The Modbus CRC differs on the same bytes: it is not the HJ 212 one.
    assert modbus_crc(data) != 0x1C80


@pytest.mark.parametrize("packet", FIELD_PACKETS)
def test_packets_from_the_field_verify(packet):
    parsed = parse(packet)
    assert parsed.fields["ST"] in ("22", "32") and parsed.fields["CN"] == "2011"
    assert parsed.cp[0]["DataTime"].startswith("20")


def test_build_round_trips_and_matches_the_annex():
    fields = {"QN": "20160801085857223", "ST": "32", "CN": "1062", "PW": "100000",
              "MN": "010000A8900016F000169DC0", "Flag": str(flag())}
    assert build(fields, [{"RtdInterval": "30"}]) == ANNEX_A + "\r\n"
    items = [{"DataTime": "20261204083000"},
             {"w01014-Rtd": "812.5", "w01014-Flag": "N"},
             {"w01001-Rtd": "7.12", "w01001-Flag": "N"}]
    packet = parse(build(dict(fields, CN="2011", ST="24"), items))
    assert packet.cp == items


@pytest.mark.parametrize(("corrupt", "error"), [
    (lambda p: p.replace("RtdInterval=30", "RtdInterval=31"), "CRC 1C80 does not"),
    (lambda p: p.replace("##0101", "##0102"), "length field says 102"),
    (lambda p: p.replace("##0101", "##01a1"), "not 4 decimal digits"),
    (lambda p: p[:-4] + "1C8G", "not 4 hex digits"),
    (lambda p: p[1:], "does not start with ##"),
    (lambda p: p.replace(";CP=&&", ";CQ=&&"), "CRC 1C80 does not"),
    (lambda p: p[:10], "length field says"),
])
def test_corrupted_packets_are_rejected_with_the_reason(corrupt, error):
    with pytest.raises(Hj212Error, match=error):
        parse(corrupt(ANNEX_A))


def test_well_framed_packet_without_cp_or_mn_is_rejected():
    body = "QN=1;ST=32;CN=2011;PW=1;Flag=5;CP=&&a=1&&"
    packet = f"##{len(body):04d}{body}{crc(body.encode()):04X}"
    with pytest.raises(Hj212Error, match="missing field"):
        parse(packet)
    body = "QN=1;ST=32;CN=2011;PW=1;MN=2;Flag=5;XP=&&a=1&&"
    with pytest.raises(Hj212Error, match="no CP="):
        parse(f"##{len(body):04d}{body}{crc(body.encode()):04X}")


def test_flag_bits():
    assert flag() == 5 and flag(answer=False) == 4 and flag(split=True) == 7
    assert flag(version=0b000010) == 9  # a later version's bits, configurable
    with pytest.raises(ValueError):
        flag(version=64)


def test_verify_command_reports_each_line():
    lines = [ANNEX_A, *FIELD_PACKETS, ANNEX_A.replace("=30", "=99"), "garbage", ""]
    done = subprocess.run(
        [sys.executable, "-m", "groundwatch", "hj212", "verify", "--json"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["ok"] for r in results] == [True, True, True, True, False, False]
    assert all(r["error"] is None for r in results[:4])
    assert "CRC" in results[4]["error"] and "##" in results[5]["error"]
    assert done.returncode == 1
    ok_only = subprocess.run(
        [sys.executable, "-m", "groundwatch", "hj212", "verify"],
        input=ANNEX_A + "\r\n", capture_output=True, text=True, timeout=60)
    assert ok_only.returncode == 0 and ok_only.stdout.strip() == "1: ok"
