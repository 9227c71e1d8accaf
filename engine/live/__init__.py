"""The live engine: MIDI out, built-in synth + audio, OSC control, the show loop.

Threads and processes (see DESIGN.md):
- the asyncio loop (``engine.live.show``) runs the conductor's plans, the OSC server and
  the health reports; it never does model work;
- worker processes realise bar plans (model decoding, arrangement) at least a bar ahead;
- one MIDI sender thread (``engine.live.midi_sender``) waits for absolute deadlines and
  sends; nothing else runs on it;
- the audio callback (``engine.live.audio_out``) renders FluidSynth into preallocated
  buffers, mixes the vocal ring buffer and limits; it never allocates, locks or raises.
  It is native code (``engine.live.audio_core``) that never takes the GIL, or, where
  that cannot be built, the Python reference callback (said by ``encore doctor``).
One timeline: the clock (``engine.clock``) maps beats <-> monotonic nanoseconds; the audio
engine alone maps nanoseconds to its output frames; the recorder is handed beats.
"""
