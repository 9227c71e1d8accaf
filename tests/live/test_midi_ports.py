"""MIDI ports: the note table, silencing on close, the memory backend, real JACK ports."""

from __future__ import annotations

import os
import time

import pytest

from engine.live.midi_ports import (
    BackendUnavailableError,
    MemoryPort,
    MidiPortError,
    NoteTable,
    PortClosedError,
    PortNotFoundError,
    list_outputs,
    match_port,
    open_output,
)

ON, OFF, CC = 0x90, 0x80, 0xB0


def silence(channel: int) -> list[bytes]:
    return [bytes((CC | channel, 64, 0)), bytes((CC | channel, 123, 0)),
            bytes((CC | channel, 120, 0))]


def test_note_table_counts_per_port_channel_pitch() -> None:
    table = NoteTable()
    table.update("a", bytes((ON | 0, 60, 100)))
    table.update("a", bytes((ON | 0, 60, 90)))  # the same note again: two voices
    table.update("a", bytes((ON | 9, 36, 100)))
    table.update("b", bytes((ON | 1, 60, 100)))
    table.update("a", bytes((ON | 9, 36, 0)))  # velocity 0 is a note-off
    table.update("b", bytes((0xC0 | 3, 5)))  # a program change marks channel 3 as used
    assert table.sounding() == {("a", 0, 60): 2, ("b", 1, 60): 1}
    assert len(table) == 3 and ("a", 0, 60) in table
    assert table.channels("a") == [0, 9] and table.channels("b") == [1, 3]
    assert table.all_off_messages("a") == (
        [("a", bytes((OFF, 60, 0)))] * 2 + [("a", m) for m in silence(0) + silence(9)])
    table.update("a", bytes((OFF | 0, 60, 0)))
    table.update("a", bytes((OFF | 0, 60, 0)))
    table.update("a", bytes((OFF | 0, 60, 0)))  # one too many: ignored
    assert table.sounding("a") == {}
    table.update("b", bytes((CC | 1, 123, 0)))  # all notes off clears the channel
    assert len(table) == 0
    table.update("b", bytes((0xF8,)))  # system messages have no channel
    assert table.channels("b") == [1, 3]


def test_close_sends_note_offs_then_channel_silence_once() -> None:
    port = MemoryPort("synth")
    port.send(bytes((ON | 2, 64, 100)))
    port.send([ON | 2, 67, 100])
    port.send(bytearray((ON | 2, 67, 100)))
    port.send(bytes((OFF | 2, 64, 0)))
    port.send(bytes((CC | 5, 7, 100)))
    assert port.sounding() == {("synth", 2, 67): 2}
    port.messages.clear()
    port.close()
    assert port.sent() == [bytes((OFF | 2, 67, 0))] * 2 + silence(2) + silence(5)
    port.close()  # idempotent: nothing more
    assert len(port.messages) == 8 and not port.is_open
    with pytest.raises(PortClosedError, match="closed"):
        port.send(bytes((ON, 60, 1)))


def test_context_manager_silences_on_an_exception() -> None:
    with pytest.raises(RuntimeError), MemoryPort("x") as port:
        port.send(bytes((ON, 60, 100)))
        raise RuntimeError("boom")
    assert port.sent()[-4:] == [bytes((OFF, 60, 0))] + silence(0)


@pytest.mark.parametrize("message, error", [
    (b"", ValueError), (bytes((60, 100)), ValueError), ([0x90, 300, 1], ValueError),
    ("note", TypeError), (42, TypeError)])
def test_bad_messages_are_refused(message: object, error: type[Exception]) -> None:
    with MemoryPort() as port, pytest.raises(error):
        port.send(message)  # type: ignore[arg-type]


def test_an_unplugged_port_fails_and_reopens_when_back() -> None:
    port = MemoryPort("usb")
    port.send(bytes((ON | 1, 50, 100)))
    port.unplug()
    with pytest.raises(MidiPortError):
        port.send(bytes((OFF | 1, 50, 0)))
    with pytest.raises(MidiPortError):
        port.silence()  # fails, and keeps the note for the reopen
    with pytest.raises(PortNotFoundError, match="plug"):
        port.reopen()
    port.plug()
    port.messages.clear()
    port.reopen()  # the note that was sounding when it went away gets its note-off
    assert port.is_open and port.reopens == 1
    assert port.sent() == [bytes((OFF | 1, 50, 0))] + silence(1)


def test_device_errors_are_oserrors_that_say_what_to_do() -> None:
    assert issubclass(MidiPortError, OSError)
    with pytest.raises(ValueError, match="unknown MIDI backend 'fluid'"):
        open_output("x", backend="fluid")
    assert isinstance(open_output("dry", backend="memory"), MemoryPort)
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has ALSA: the 'no ALSA' message cannot be seen here")
    with pytest.raises(BackendUnavailableError, match="ALSA MIDI is not available.*snd-seq"):
        open_output("USB MIDI", backend="alsa")


def test_match_port_is_by_case_insensitive_part_of_the_name() -> None:
    names = ["Midi Through:Midi Through Port-0 14:0", "USB MIDI:USB MIDI MIDI 1 20:0",
             "usb midi"]
    assert match_port("usb midi", names) == 2  # an exact match wins
    assert match_port("USB MIDI MIDI 1", names) == 1
    assert match_port("through", names) == 0
    assert match_port("volca", names) is None


# -- real JACK ports ----


def test_jack_output_found_by_part_of_its_name(jack_receiver) -> None:
    names = list_outputs("jack")
    assert jack_receiver.port_name in names
    port = open_output(jack_receiver.port_name.upper(), backend="jack",
                       client_name="encore-test", port_name="melody")
    try:
        assert port.device_name == jack_receiver.port_name
        port.send(bytes((ON, 60, 100)))
        port.send(bytes((OFF, 60, 0)))
        time.sleep(0.1)
        assert [m for _, m in jack_receiver.take()] == [bytes((ON, 60, 100)),
                                                      bytes((OFF, 60, 0))]
    finally:
        port.close()
    time.sleep(0.1)
    # nothing sounds, so no note-offs; the channel used still gets its silence, and the
    # port waits for it to leave before closing (rtmidi's JACK output drops the rest)
    assert [m for _, m in jack_receiver.take()] == silence(0)


def test_auto_finds_the_jack_output_when_jack_runs(jack_receiver) -> None:
    with open_output(jack_receiver.port_name, client_name="encore-test") as port:
        assert port.backend == "jack" and port.device_name == jack_receiver.port_name


def test_a_missing_jack_output_lists_what_there_is(jack_receiver) -> None:
    with pytest.raises(PortNotFoundError) as info:
        open_output("no such synth", backend="jack", client_name="encore-test")
    message = str(info.value)
    assert "no MIDI output matches 'no such synth'" in message
    assert jack_receiver.port_name in message and "plug the synth in" in message


def test_virtual_port_shows_up_in_jack(jack_receiver) -> None:
    port = open_output("melody", backend="virtual", client_name="encore-virt")
    try:
        client = jack_receiver.client
        names = [p.name for p in client.get_ports(is_midi=True, is_output=True)]
        mine = [n for n in names if n.startswith("encore-virt") and n.endswith(":melody")]
        assert mine, names
        client.connect(mine[0], jack_receiver.port_name)
        port.send(bytes((ON | 3, 70, 80)))
        time.sleep(0.1)
        assert [m for _, m in jack_receiver.take()] == [bytes((ON | 3, 70, 80))]
        port.close()
        time.sleep(0.1)
        assert [m for _, m in jack_receiver.take()] == [bytes((OFF | 3, 70, 0))] + silence(3)
    finally:
        port.close()
