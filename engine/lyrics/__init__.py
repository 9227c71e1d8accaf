"""Lyrics: words for the song's melody.

- :mod:`engine.lyrics.syllables`: syllable counts, stresses and rhymes from CMUdict, with
  an orthographic fallback for words the dictionary lacks;
- :mod:`engine.lyrics.markov`: a variable-order word Markov lyricist, the fast fallback.
"""
