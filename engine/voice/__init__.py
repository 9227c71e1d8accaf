"""The voice: sung phrases from phrase plans.

- :mod:`engine.voice.voicebank`: an OpenUtau-style DiffSinger voicebank folder, read and
  validated (configs, phoneme set, dictionaries, speakers, vocoder);
- :mod:`engine.voice.g2p`: English words to a bank's phonemes, split into syllables;
- :mod:`engine.voice.timing`: vowel-aligned phoneme timing and the f0 curve of a phrase;
- :mod:`engine.voice.diffsinger`: the ONNX Runtime runner of a voicebank's graphs;
- :mod:`engine.voice.fallback_singer`: a non-neural singer for when no bank is there or
  a phrase cannot be rendered in time;
- :mod:`engine.voice.teachers`: the speech synthesizers it re-pitches (Flite, Festival;
  espeak-ng's lives in the fallback singer);
- :mod:`engine.voice.singer`: the :class:`~engine.voice.singer.Singer` protocol every singer
  implements and the :class:`~engine.voice.singer.SungAudio` it returns.
"""
