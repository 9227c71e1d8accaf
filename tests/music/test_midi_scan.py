"""The MIDI walk counts what mido parses: on generated files (running status, meta and
SysEx messages, several tracks) its count of events equals mido's, and past the limit it
refuses naming the file."""

from __future__ import annotations

import io
import random

import mido
import pytest

from engine.music.midi_scan import MAX_MIDI_WORK, MidiTooLargeError, check_midi_work


def _random_file(rng: random.Random) -> bytes:
    midi = mido.MidiFile(type=1, ticks_per_beat=rng.choice([96, 480, 960]))
    for _ in range(rng.randint(1, 4)):
        track = mido.MidiTrack()
        for _ in range(rng.randint(0, 300)):
            kind = rng.random()
            time = rng.choice([0, 0, 1, 127, 128, 16383, 16384, 2**21])
            if kind < 0.6:
                track.append(mido.Message(rng.choice(["note_on", "note_off"]),
                                          channel=rng.randrange(16), note=rng.randrange(128),
                                          velocity=rng.randrange(128), time=time))
            elif kind < 0.7:
                track.append(mido.Message("program_change", channel=rng.randrange(16),
                                          program=rng.randrange(128), time=time))
            elif kind < 0.8:
                track.append(mido.Message("pitchwheel", channel=rng.randrange(16),
                                          pitch=rng.randrange(-8192, 8192), time=time))
            elif kind < 0.9:
                track.append(mido.Message("sysex", data=[rng.randrange(128) for _ in
                                                         range(rng.randint(0, 40))], time=time))
            else:
                track.append(mido.MetaMessage("text", text="x" * rng.randint(0, 40), time=time))
        midi.tracks.append(track)
    out = io.BytesIO()
    midi.save(file=out)  # mido writes running status where it can
    return out.getvalue()


@pytest.mark.parametrize("seed", range(20))
def test_the_walk_counts_the_events_mido_reads(seed: int) -> None:
    data = _random_file(random.Random(seed))
    parsed = mido.MidiFile(file=io.BytesIO(data), clip=True)
    events = sum(len(track) for track in parsed.tracks)
    long_bytes = sum(len(m.bin()) for track in parsed.tracks for m in track
                     if m.type in ("sysex", "text"))
    work = check_midi_work(data, "x.mid")
    # one per event and track, and a little for long messages (16 bytes each)
    assert events + len(parsed.tracks) <= work <= events + len(parsed.tracks) + long_bytes


def test_past_the_limit_the_file_is_refused_by_name() -> None:
    body = b"\x00\x90\x3c\x40" + b"\x00\x3c\x00" * (MAX_MIDI_WORK + 10) + b"\x00\xff\x2f\x00"
    data = (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk"
            + len(body).to_bytes(4, "big") + body)
    with pytest.raises(MidiTooLargeError, match=r"big\.mid: .*too many events.*split it"):
        check_midi_work(data, "big.mid")


def test_a_variable_length_number_over_four_bytes_is_refused() -> None:
    body = b"\x80\x80\x80\x80\x00\x90\x3c\x40"
    data = (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk"
            + len(body).to_bytes(4, "big") + body)
    with pytest.raises(ValueError, match="variable-length number"):
        check_midi_work(data, "odd.mid")
