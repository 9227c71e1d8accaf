"""The evaluation's features and overlapped area on tiny hand-made songs."""

import math

import numpy as np
import pytest

from export import music_eval as me
from export.music_eval import Hit, LibraryBar, Song, Tone


def line(pitches, length=1.0, start=0.0):
    return tuple(Tone(start + i * length, start + (i + 1) * length, p)
                 for i, p in enumerate(pitches))


def test_monophonic_keeps_the_top_line_and_cuts_a_lower_note():
    tones = [Tone(0, 2, 60), Tone(0, 1, 64), Tone(1, 2, 55), Tone(1.5, 3, 67)]
    assert me.monophonic(tones) == (Tone(0, 1, 64), Tone(1, 1.5, 55), Tone(1.5, 3, 67))
    assert me.monophonic(tones, keep="low") == (Tone(0, 1, 60), Tone(1, 2, 55))


def test_segment_features_count_onsets_ioi_and_lengths():
    melody = line([60, 62, 64, 65], 0.5) + (Tone(2, 4, 67), Tone(4, 8, 72))
    song = Song("s", melody, bass=line([36, 43], 4.0), tonic=0, mode="major")
    feats = me.segment_features(song, 0.0)
    assert feats["melody_notes"] == 6
    assert feats["bass_notes"] == 2
    assert feats["melody_ioi"] == pytest.approx(4 / 5)  # onsets 0 .5 1 1.5 2 4
    hist = feats["melody_lengths"]
    assert hist[1] == pytest.approx(4 / 6)  # 8ths
    assert hist[3] == pytest.approx(1 / 6) and hist[4] == pytest.approx(1 / 6)
    assert math.isnan(me.segment_features(Song("one", (Tone(0, 1, 60),)), 0.0)["melody_ioi"])


def test_segment_starts_skip_silent_and_partial_segments():
    song = Song("s", line([60] * 4, 1.0) + (Tone(32, 33, 60), Tone(48, 50, 62)))
    assert me.segment_starts(song) == [0.0, 32.0]  # 16..32 silent, 48..50 not whole


def test_note_length_class_is_nearest_on_a_log_scale():
    assert [me.note_length_class(x) for x in (0.25, 0.3, 0.75, 1.4, 2.7, 16)] == [
        0, 0, 2, 2, 3, 4]
    with pytest.raises(ValueError):
        me.note_length_class(0)


def test_trigram_share_is_low_for_a_repeated_motif():
    motif = [60, 62, 64, 60]  # intervals 2 2 -4 0 repeat: 4 distinct 3-grams of 13
    assert me.interval_trigram_distinct_share(line(motif * 4)) == pytest.approx(4 / 13)
    assert me.interval_trigram_distinct_share(line([60, 61, 63, 66, 70, 75])) == 1.0
    assert math.isnan(me.interval_trigram_distinct_share(line([60, 62, 64])))


def test_find_key_and_third_share():
    c_major = line([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60], 1.0)
    assert me.find_key(c_major) == (0, "major")
    a_minor = line([57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57, 57], 1.0)
    assert me.find_key(a_minor) == (9, "minor")
    assert me.third_share(c_major, 0, "major") == pytest.approx(2 / 11)
    assert me.third_share(a_minor, 9, "minor") == pytest.approx(2 / 12)


def test_drum_library_share_and_style_mixing():
    kick, snare, hat = 36, 38, 42
    rock = [Hit(b, kick) for b in (0, 2)] + [Hit(b, snare) for b in (1, 3)] + [
        Hit(b / 2, hat) for b in range(8)]
    four = [Hit(b, kick) for b in range(4)] + [Hit(b + 0.5, 46) for b in range(4)]
    rock_bar, four_bar = me.drum_bars(rock, 1)[0], me.drum_bars(four, 1)[0]
    library = [LibraryBar(rock_bar, "rock", False), LibraryBar(four_bar, "house", False),
               LibraryBar(me.drum_bars([Hit(b / 4, 45) for b in range(16)], 1)[0], "tom_run",
                          True)]

    def shift(hits, bars):
        return [Hit(h.beat + 4 * bars, h.pitch) for h in hits]

    varied = rock[:-1]  # one hat missing: nearest to rock, not a library bar
    song = rock + shift(varied, 1) + shift(rock, 2) + shift(rock, 3) + shift(rock, 4) + shift(
        four, 5) + shift(rock, 6) + shift(four, 7)
    bars = me.drum_bars(song, 8)
    assert me.library_share(bars, library) == pytest.approx(7 / 8)
    assert me.nearest_style(bars[1], library) == "rock"
    assert me.style_mixing_share(bars, library) == pytest.approx(1 / 2)
    fills = me.drum_bars([Hit(b / 4, 45) for b in range(16)] * 1, 1) * 4
    assert math.isnan(me.style_mixing_share(fills, library))


def test_overlapped_area_is_one_for_the_same_samples_and_small_when_apart():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 500)
    assert me.overlapped_area(a, a) == pytest.approx(1.0, abs=1e-3)
    assert me.overlapped_area(a, rng.normal(0, 1, 500)) > 0.85
    assert me.overlapped_area(a, rng.normal(10, 1, 500)) < 0.01


def test_feature_oa_separates_a_slow_set_from_a_busy_reference():
    rng = np.random.default_rng(2)
    busy = list(rng.integers(24, 32, 200).astype(float))
    like = list(rng.integers(24, 32, 200).astype(float))
    slow = list(rng.integers(6, 10, 200).astype(float))
    assert me.feature_oa(like, busy) > 0.8
    assert me.feature_oa(slow, busy) < 0.2
    hist_a = [np.array([0, 0.5, 0.5, 0, 0])] * 30
    hist_b = [np.array([0, 0, 0, 0.5, 0.5])] * 30
    assert len(me.intra_set_distances(hist_a)) == 30 * 29 // 2
    assert np.allclose(me.inter_set_distances(hist_a[:2], hist_b[:3]), math.sqrt(1.0))
