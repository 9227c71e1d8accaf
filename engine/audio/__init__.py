"""Audio: offline FluidSynth rendering and WAV writing."""
