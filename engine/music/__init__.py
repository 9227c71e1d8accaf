"""Symbolic music: notes, bars, encodings, MIDI files, MusicVAE runner."""
