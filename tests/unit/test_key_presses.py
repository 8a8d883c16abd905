"""RFC 4733's one packetizer (``rtc/rfc4733.py`` ``KeyPresses``): what every leg sends for a
key press, tick by tick, read back by the one detector."""

from __future__ import annotations

from bridge.rtc.rfc4733 import END_REPEATS, DtmfDetector, KeyPresses


def test_a_press_is_a_packet_a_tick_its_duration_growing_and_its_end_marked() -> None:
    presses = KeyPresses()
    presses.press("5", 100)
    packets = []
    while (packet := presses.next_packet(160)) is not None:
        packets.append(packet)
    assert [p.first for p in packets] == [True, False, False, False, False]
    assert [p.end for p in packets] == [False, False, False, False, True]
    assert [int.from_bytes(p.payload[2:4], "big") for p in packets] == [160, 320, 480, 640, 800]
    assert {p.payload[0] for p in packets} == {5}
    assert packets[-1].payload[1] & 0x80 and not packets[0].payload[1] & 0x80
    assert presses.presses == 1 and not presses.pending


def test_the_detector_reads_back_each_press_once_whatever_the_end_repeats() -> None:
    heard: list[tuple[str, int]] = []
    detector = DtmfDetector(lambda digit, ms: heard.append((digit, ms)), 8000)
    presses = KeyPresses()
    for digit in "#7D":
        presses.press(digit, 160)
    timestamp = 0
    while (packet := presses.next_packet(160)) is not None:
        if packet.first:
            timestamp += 8000
        for _ in range(END_REPEATS if packet.end else 1):
            detector.feed(timestamp, packet.payload)
    assert heard == [("#", 160), ("7", 160), ("D", 160)]


def test_presses_beyond_the_bound_drop_the_oldest_and_are_counted() -> None:
    presses = KeyPresses(limit=2)
    for digit in "123":
        presses.press(digit, 40)
    assert presses.dropped == 1
    events = []
    while (packet := presses.next_packet(160)) is not None:
        if packet.first:
            events.append(packet.payload[0])
    assert events == [2, 3]
