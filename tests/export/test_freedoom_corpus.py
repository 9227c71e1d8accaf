"""The WAD reader, the MUS decoder and the part picker on WADs built here."""

import io
import random
import struct

import mido
import pytest

from export import freedoom_corpus as fc
from export.music_eval import Tone


def make_wad(lumps, ident=b"PWAD"):
    body = b"".join(data for _, data in lumps)
    directory, offset = b"", 12
    for name, data in lumps:
        directory += struct.pack("<ii8s", offset, len(data), name.encode())
        offset += len(data)
    return struct.pack("<4sii", ident, len(lumps), 12 + len(body)) + body + directory


def make_midi():
    midi = mido.MidiFile(ticks_per_beat=96)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.Message("program_change", channel=0, program=80))
    track.append(mido.Message("program_change", channel=1, program=33))
    for beat in range(8):
        track.append(mido.Message("note_on", channel=0, note=72 + beat % 3, velocity=90))
        track.append(mido.Message("note_on", channel=0, note=60, velocity=90))  # harmony
        track.append(mido.Message("note_on", channel=1, note=36, velocity=90))
        track.append(mido.Message("note_on", channel=9, note=36, velocity=90))
        track.append(mido.Message("note_off", channel=0, note=72 + beat % 3, time=48))
        track.append(mido.Message("note_off", channel=0, note=60))
        track.append(mido.Message("note_off", channel=1, note=36))
        track.append(mido.Message("note_off", channel=9, note=36, time=48))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def make_mus(events):
    header = struct.pack("<4sHHHHHH", b"MUS\x1a", len(events), 16, 2, 0, 0, 0)
    return header + events


# play C5 (vol 100) on ch 0, delay 70; release; play kick on ch 15, delay 35; release; end
MUS_SCORE = bytes([0x90, 0x80 | 72, 100, 70, 0x00, 72, 0x9F, 36, 35, 0x0F, 36, 0x60])


def test_reads_music_lumps_of_both_formats_and_ignores_the_rest(tmp_path):
    wad = tmp_path / "t.wad"
    wad.write_bytes(make_wad([("MAP01", b"\0" * 10), ("D_SONG", make_midi()),
                              ("D_OLD", make_mus(MUS_SCORE)), ("D_JUNK", b"noise")]))
    lumps = fc.music_lumps(wad)
    assert [(lump.name, lump.kind) for lump in lumps] == [("D_SONG", "midi"), ("D_OLD", "mus")]


def test_midi_parts_take_the_top_line_bass_and_drums():
    song = fc.pick_parts(fc.midi_channels(make_midi()), "t")
    assert [t.pitch for t in song.melody] == [72 + b % 3 for b in range(8)]
    assert song.melody[1] == Tone(1.0, 1.5, 73)
    assert [t.pitch for t in song.bass] == [36] * 8
    assert [h.beat for h in song.drums] == [float(b) for b in range(8)]


def test_mus_decoding_maps_channel_15_to_drums_and_140hz_to_beats():
    channels = fc.mus_channels(make_mus(MUS_SCORE))
    assert channels[0].tones == [Tone(0.0, 1.0, 72)]
    assert channels[fc.DRUM_CHANNEL].tones == [Tone(1.0, 1.5, 36)]


@pytest.mark.parametrize("data, words", [
    (b"IWA", "too short"),
    (b"WAD2" + bytes(8), "not a WAD"),
    (struct.pack("<4sii", b"IWAD", 5, 12), "runs past the end"),
    (struct.pack("<4sii", b"IWAD", -1, 12), "lump count"),
    (struct.pack("<4sii", b"PWAD", 1, 12) + struct.pack("<ii8s", 4, 999, b"D_X"),
     "outside the file"),
])
def test_damaged_wads_are_refused_with_the_reason(data, words):
    with pytest.raises(fc.WadError, match=words):
        fc.read_directory(data, "bad.wad")


def test_damaged_music_is_refused():
    with pytest.raises(fc.WadError, match="middle of an event"):
        fc.mus_channels(make_mus(MUS_SCORE[:2]))
    with pytest.raises(fc.WadError, match="SMPTE"):
        fc.midi_channels(b"MThd" + b"\xff" * 30, "bad")
    with pytest.raises(fc.WadError, match="not a readable MIDI"):
        fc.midi_channels(make_midi()[:30], "bad")


def test_mangled_wads_raise_only_wad_errors(tmp_path):
    good = make_wad([("D_SONG", make_midi()), ("D_OLD", make_mus(MUS_SCORE))])
    rng = random.Random(7)
    outcomes = set()
    for trial in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if trial % 3 == 0:
            data = data[:rng.randrange(len(data))]
        wad = tmp_path / "m.wad"
        wad.write_bytes(bytes(data))
        try:
            for lump in fc.music_lumps(wad):
                fc.lump_song(lump)
            outcomes.add("read")
        except fc.WadError:
            outcomes.add("refused")
    assert outcomes == {"read", "refused"}


def test_an_endless_mus_delay_is_refused():
    huge = bytes([0x90, 0x80 | 72, 100, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 72, 0x60])
    lump = fc.MusicLump("t.wad", "D_LONG", "mus", make_mus(huge))
    with pytest.raises(fc.WadError, match="beats long"):
        fc.lump_song(lump)


def test_missing_wads_say_how_to_install(tmp_path):
    with pytest.raises(fc.WadError, match="apt-get install freedoom"):
        fc.load_songs((tmp_path / "none.wad",))


@pytest.mark.skipif(not fc.DEFAULT_WADS[1].is_file(), reason="Debian's freedoom not installed")
def test_the_real_freedoom_soundtrack_has_band_parts():
    songs = fc.load_songs()
    assert len(songs) >= 50
    full = [s for s in songs if len(s.melody) > 32 and len(s.bass) > 32 and len(s.drums) > 32]
    assert len(full) >= 40
