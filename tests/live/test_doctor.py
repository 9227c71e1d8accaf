"""``encore doctor`` on this machine, for real: the shipped models are loaded and timed, the
MIDI and audio systems asked, the OSC port bound. Broken patches give FAIL lines naming
the key and the fix, and exit status 1."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from engine.cli import main
from engine.doctor import Check, check_audio_path, check_midi, check_osc, run_checks
from engine.live import audio_core
from engine.patch import parse_patch

NAMES = ("patch", "soundfont", "audio output", "audio path", "MIDI system", "onnxruntime",
         "song model", "lyrics", "singer", "espeak-ng", "fallback teacher", "voice speed",
         "OSC port", "disk")


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_every_check_gives_a_line_and_the_timings_are_measured(tmp_path: Path) -> None:
    checks = list(run_checks("default", sets_dir=tmp_path / "sets"))
    named = by_name(checks)
    assert set(NAMES) <= set(named), f"missing checks: {set(NAMES) - set(named)}"
    for check in checks:
        line = check.line()
        assert "\n" not in line
        assert line.startswith(f"{check.status:<4} {check.name}")
        assert (" -> fix: " in line) == bool(check.fix)
        if check.status != "OK":
            assert check.fix, f"{check.name} is {check.status} without a fix: {line}"
    assert named["patch"].status == "OK"
    assert named["soundfont"].status == "OK", named["soundfont"].line()  # the setup installs it
    for name in ("song model", "lyrics", "voice speed"):  # the shipped models and espeak-ng
        value = named[name].value
        assert value is not None and value > 0, named[name].line()
        assert named[name].status != "FAIL", named[name].line()
    assert "real-time factor" in named["song model"].detail
    assert "real-time factor" in named["voice speed"].detail
    assert named["disk"].value is not None and named["disk"].value > 0


def test_a_missing_midi_port_and_soundfont_fail_with_their_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patch = tmp_path / "broken.toml"
    patch.write_text("""
[audio]
soundfont = "/nowhere/no_such_font.sf2"

[parts.bass]
port = "encore-no-such-synth"

[lyrics]
source = "off"
""")
    assert main(["doctor", "--patch", str(patch)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\d+ OK, \d+ WARN, [1-9]\d* FAIL", lines[-1]), lines[-1]
    port = [ln for ln in lines if ln.startswith("FAIL MIDI port")]
    assert len(port) == 1, lines
    assert "'encore-no-such-synth' (bass)" in port[0]
    assert "-> fix: check [parts.bass] port" in port[0]
    font = [ln for ln in lines if ln.startswith("FAIL soundfont")]
    assert len(font) == 1, lines
    assert "[audio] soundfont = '/nowhere/no_such_font.sf2': no such file" in font[0]
    assert "-> fix: " in font[0] and ".sf2" in font[0].split("-> fix: ")[1]
    assert any(ln.startswith("OK   singer") and "nothing is sung" in ln for ln in lines)


def test_a_midi_port_that_is_there_is_found(jack_server: str) -> None:
    """A virtual MIDI input made here on the JACK dummy server is found by part of its
    name, as the show would find a synth."""
    from engine.live.midi_ports import platform_apis, rtmidi_client

    apis = platform_apis()
    assert apis, "the JACK server runs, so a MIDI system must be found"
    client = rtmidi_client(apis[0], "encore-doctor-test", direction="in")
    try:
        client.open_virtual_port("doctor-probe-in")
        patch = parse_patch('[parts.melody]\nport = "DOCTOR-PROBE"\n')
        checks = by_name(list(check_midi(patch)))
        assert checks["MIDI system"].status == "OK"
        assert checks["MIDI port"].status == "OK", checks["MIDI port"].line()
        assert "doctor-probe-in" in checks["MIDI port"].detail
    finally:
        client.close_port()
        client.delete()


def test_an_osc_port_in_use_fails_and_a_free_one_passes() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        busy = check_osc(parse_patch(f"[osc]\nport = {port}\n"))
    assert busy.status == "FAIL", busy.line()
    assert "in use" in busy.detail and "[osc] port" in busy.fix
    free = check_osc(parse_patch(f"[osc]\nport = {port}\n"))  # released now
    assert free.status == "OK", free.line()
    wrong = check_osc(parse_patch('[osc]\nhost = "192.0.2.77"\nport = 9000\n'))
    assert wrong.status == "FAIL" and "[osc] host" in wrong.fix  # not this machine's address


def test_providers_of_names_the_provider_each_model_got(tiny_trio, tiny_gpt2_onnx_dir) -> None:
    """The runners' real ONNX sessions: the provider each got (CPU here; CUDA where
    onnxruntime-gpu finds a GPU), none for a model without a session."""
    import onnxruntime as ort

    from engine.doctor import _held, providers_of
    from engine.lyrics.gpt2_runner import GPT2Lyricist

    expected = "CUDA" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPU"
    assert providers_of(tiny_trio) == "CPU"  # the fixture asks for the CPU
    lyricist = GPT2Lyricist.load(tiny_gpt2_onnx_dir)
    assert providers_of(lyricist) == expected

    class Holder:  # a writer-like object holding a source that holds the runner
        def __init__(self, inner: object) -> None:
            self.source = inner

    assert providers_of(Holder(Holder(lyricist))) == expected
    assert providers_of(object()) == ""
    assert _held(Holder(Holder(lyricist)), "weights") == "float"  # the lyrics line names it
    assert _held(object(), "weights") is None


def test_the_audio_path_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor says which callback plays: the native core (the setup builds it) or the
    Python fallback, never silently."""
    patch = parse_patch("")
    monkeypatch.delenv(audio_core.ENV_PATH, raising=False)
    check = check_audio_path(patch)
    if audio_core.load()[0] is None:
        assert check.status == "WARN" and "setup.sh" in check.fix, check.line()
    else:
        assert check.status == "OK" and "native core" in check.detail, check.line()
    monkeypatch.setenv(audio_core.ENV_PATH, "python")
    check = check_audio_path(patch)
    assert check.status == "WARN" and "ENCORE_AUDIO_PATH=python" in check.detail
    assert "unset ENCORE_AUDIO_PATH" in check.fix
