"""RTU slave: CRC, framing by silence, every function and its exceptions."""

from node import modbus


def frame(*pdu):
    """unit + PDU bytes with the CRC appended (low byte first)."""
    b = bytearray(pdu)
    crc = modbus.crc16(b, len(b))
    b.append(crc & 0xFF)
    b.append(crc >> 8)
    return b


def ask(slave, *pdu):
    req = frame(*pdu)
    n = slave.handle(req, len(req))
    return bytes(slave.tx[:n])


def make():
    return modbus.Slave(17, modbus.Tables(200, 40, 200, 10))


def test_crc_check_value_of_the_crc_catalogue():
    # CRC-16/MODBUS check value: crc("123456789") = 0x4B37 (reveng CRC catalogue).
    data = b"123456789"
    assert modbus.crc16(data, len(data)) == 0x4B37


def test_crc_of_a_textbook_request():
    # Read 10 holding registers of unit 1 from 0: 01 03 00 00 00 0A C5 CD.
    assert bytes(frame(1, 3, 0, 0, 0, 10)) == bytes([1, 3, 0, 0, 0, 10, 0xC5, 0xCD])


def test_read_holding_registers_as_the_application_protocol_example():
    # Modbus Application Protocol v1.1b3, 6.3: registers 108-110 (address 0x006B,
    # quantity 3) hold 0x022B, 0x0000, 0x0064; the reply's byte count is 6.
    s = make()
    s.tables.holding[0x6B] = 0x022B
    s.tables.holding[0x6D] = 0x0064
    reply = ask(s, 17, 3, 0x00, 0x6B, 0x00, 0x03)
    assert reply == bytes(frame(17, 3, 6, 0x02, 0x2B, 0, 0, 0x00, 0x64))


def set_bits(bits, first, count, status):
    for i in range(count):
        if status[i >> 3] >> (i & 7) & 1:
            bits[first + i] = 1


def test_read_coils_as_the_application_protocol_example():
    # Modbus Application Protocol v1.1b3, 6.1: coils 20-38 (address 0x13, quantity
    # 0x13) read as CD 6B 05, the lowest coil in the lowest bit, the rest zero.
    s = make()
    set_bits(s.tables.coils, 0x13, 0x13, (0xCD, 0x6B, 0x05))
    reply = ask(s, 17, 1, 0x00, 0x13, 0x00, 0x13)
    assert reply == bytes(frame(17, 1, 3, 0xCD, 0x6B, 0x05))


def test_read_discrete_inputs_as_the_application_protocol_example():
    # Same spec, 6.2: inputs 197-218 (address 0xC4, quantity 0x16) read as AC DB 35.
    s = modbus.Slave(17, modbus.Tables(1, 240, 1, 1))
    set_bits(s.tables.discrete, 0xC4, 0x16, (0xAC, 0xDB, 0x35))
    reply = ask(s, 17, 2, 0x00, 0xC4, 0x00, 0x16)
    assert reply == bytes(frame(17, 2, 3, 0xAC, 0xDB, 0x35))


def test_read_input_registers_and_discrete_inputs():
    s = make()
    s.tables.input[9] = 0xBEEF
    assert ask(s, 17, 4, 0, 9, 0, 1) == bytes(frame(17, 4, 2, 0xBE, 0xEF))
    s.tables.discrete[2] = 1
    assert ask(s, 17, 2, 0, 0, 0, 3) == bytes(frame(17, 2, 1, 0b100))


def test_write_single_coil_echoes_and_writes():
    s = make()
    # Application protocol 6.5: coil 173 (address 0x00AC) ON, the request echoed.
    assert ask(s, 17, 5, 0, 0xAC, 0xFF, 0) == bytes(frame(17, 5, 0, 0xAC, 0xFF, 0))
    assert s.tables.coils[0xAC] == 1
    assert ask(s, 17, 5, 0, 0xAC, 0, 0) == bytes(frame(17, 5, 0, 0xAC, 0, 0))
    assert s.tables.coils[0xAC] == 0


def test_write_single_register_only_where_writable():
    s = make()
    s.tables.holding_writable[1] = 1
    assert ask(s, 17, 6, 0, 1, 0x12, 0x34) == bytes(frame(17, 6, 0, 1, 0x12, 0x34))
    assert s.tables.holding[1] == 0x1234
    assert ask(s, 17, 6, 0, 2, 0, 1) == bytes(frame(17, 0x86, 2))
    assert s.tables.holding[2] == 0


def test_exception_responses():
    s = make()
    assert ask(s, 17, 16, 0, 0, 0, 1) == bytes(frame(17, 0x90, 1))  # not supported
    assert ask(s, 17, 3, 0, 199, 0, 2) == bytes(frame(17, 0x83, 2))  # past the end
    assert ask(s, 17, 3, 0, 0, 0, 126) == bytes(frame(17, 0x83, 3))  # over 125
    assert ask(s, 17, 3, 0, 0, 0, 0) == bytes(frame(17, 0x83, 3))
    assert ask(s, 17, 1, 0, 0, 0x07, 0xD1) == bytes(frame(17, 0x81, 3))  # over 2000
    assert ask(s, 17, 5, 0, 0, 0x12, 0x34) == bytes(frame(17, 0x85, 3))  # not FF00/0000
    assert ask(s, 17, 5, 0, 200, 0xFF, 0) == bytes(frame(17, 0x85, 2))
    assert s.exceptions == 7


def test_other_units_bad_crc_and_broadcast_get_no_reply():
    s = make()
    assert ask(s, 18, 3, 0, 0, 0, 1) == b""
    req = frame(17, 3, 0, 0, 0, 1)
    req[-1] ^= 1
    assert s.handle(req, len(req)) == 0 and s.bad_crc == 1
    s.tables.holding_writable[0] = 1
    assert ask(s, 0, 6, 0, 0, 0, 7) == b""  # broadcast: acted on, not answered
    assert s.tables.holding[0] == 7


def test_silence_is_three_and_a_half_characters():
    # 11 bits a character: at 9600 baud 3.5 characters are 4.01 ms.
    assert modbus.silence_us(9600) == 4011
    assert modbus.silence_us(19200) == 2006
    assert modbus.silence_us(115200) == 1750  # fixed above 19200 (spec 2.5.1.1)


def diff(a, b):
    return a - b


def test_framer_ends_a_frame_only_after_the_silence():
    f = modbus.Framer(9600)
    req = frame(17, 3, 0, 0, 0, 1)
    for i in range(4):  # the first half, then a pause shorter than 3.5 characters
        f.chunk[0] = req[i]
        f.got(1, 1000 * i)
    assert f.complete(3000 + 4010, diff) == 0
    for i in range(4, 8):
        f.chunk[0] = req[i]
        f.got(1, 7000 + 1000 * i)
    assert f.complete(14000 + 4010, diff) == 0
    assert f.complete(14000 + 4011, diff) == 8
    assert bytes(f.rx[:8]) == bytes(req)
    f.reset()
    assert f.complete(30000, diff) == 0


def test_framer_drops_an_overlong_frame():
    f = modbus.Framer(9600)
    for _ in range(5):  # 320 bytes
        f.got(64, 0)
    assert f.complete(10000, diff) == 0 and f.n == 0
