"""The stage page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromium-driver, against ``encore live --web`` playing on JACK.

Two pages at once (a phone-sized one and a tablet-sized one): the phone presses "next
section", moves the tempo fader and the x/y pad, the tablet mutes the bass; each page's
labels follow the other's touches, and the set's ``song.jsonl`` and ``song.mid`` hold
each change on the bar it lands on. Screenshots of both sizes are kept in the test's
folder (``ENCORE_SCREENSHOTS=DIR`` copies them there too).

Skips when Chromium, chromium-driver or Selenium is missing (``scripts/setup.sh``
installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("jack")
mido = pytest.importorskip("mido")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
PHONE = (390, 844)     # portrait phone
TABLET = (1024, 768)   # landscape tablet
BASS_CHANNEL = 2       # 1-based, as in the patch
WAIT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_patch(tmp_path: Path, web_port: int) -> Path:
    path = tmp_path / "web.toml"
    path.write_text(f"""
[song]
tempo = 240.0
model = "tiny_trio"

[form]
sections = ["verse", "chorus"]
loop_from = 0

[form.lengths]
verse = 8
chorus = 8

[lyrics]
source = "markov"

[humanize]
timing_ms = 0.0

[midi]
backend = "virtual"

[parts.melody]
port = "web-melody"
[parts.bass]
port = "web-bass"
channel = {BASS_CHANNEL}
[parts.drums]
port = "web-drums"
[parts.chords]
port = "web-chords"

[live]
internal_synth = false

[osc]
port = 0

[web]
port = {web_port}
""")
    return path


def browser(size: tuple[int, int]) -> Any:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='encore-chromium-')}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(*size)
    if size[0] < 500:  # narrower than a desktop window may be: a phone's screen, emulated
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": True})
    return driver


@pytest.fixture
def live_set(jack_server: str, tiny_model_dir: Path, tmp_path: Path) -> Iterator[dict]:
    """``encore live --web`` as a subprocess on JACK; stopped with SIGINT (Ctrl-C)."""
    port = free_port()
    log_path = tmp_path / "live.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "live", "--patch",
             str(write_patch(tmp_path, port)), "--model-dir", str(tiny_model_dir),
             "--no-audio", "--record", str(tmp_path / "set"), "--web"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
    info = {"url": f"http://127.0.0.1:{port}/", "process": process, "log": log_path,
            "set": tmp_path / "set"}
    try:
        deadline = time.monotonic() + 90
        while "stage page on" not in log_path.read_text():
            if process.poll() is not None:
                pytest.fail(f"encore live exited: {log_path.read_text()}")
            assert time.monotonic() < deadline, f"no stage page: {log_path.read_text()}"
            time.sleep(0.2)
        yield info
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def text_of(driver: Any, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def wait_for(driver: Any, condition, what: str, timeout: float = WAIT_S) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=what)


def pressed(driver: Any, address_slug: str) -> bool:
    button = driver.find_element(By.CSS_SELECTOR, f"#c-{address_slug} button")
    return button.get_attribute("aria-pressed") == "true"


def pad_point(driver: Any) -> list[float]:
    return driver.execute_script("return page.state ? page.state.xy : [0.5, 0.5];")


def midi_notes_and_tempi(path: Path) -> tuple[list[tuple[int, float]], list[tuple[float, float]]]:
    """(channel 1-based, beat) of every note-on, and (beat, bpm) of every tempo change."""
    midi = mido.MidiFile(path)
    notes, tempi = [], []
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            beat = tick / midi.ticks_per_beat
            if message.type == "note_on" and message.velocity > 0:
                notes.append((message.channel + 1, beat))
            elif message.type == "set_tempo":
                tempi.append((beat, round(mido.tempo2bpm(message.tempo), 1)))
    return notes, tempi


def test_two_pages_steer_the_set_and_the_recording_holds_it(live_set: dict,
                                                             tmp_path: Path) -> None:
    phone, tablet = browser(PHONE), browser(TABLET)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        for driver in (phone, tablet):
            driver.get(live_set["url"])
        for driver in (phone, tablet):  # playing, in the verse, controls built
            wait_for(driver, lambda d: text_of(d, "section") == "verse"
                     and text_of(d, "barbeat") not in ("", "–"), "the page shows the set")
        # early in a verse (its bars 1..4 of 8), so that the chorus can only come early
        wait_for(phone, lambda d: text_of(d, "section") == "verse"
                 and 1 <= int(text_of(d, "in-section").split("/")[0]) <= 4,
                 "early in a verse", timeout=60)

        # next section: both pages show the chorus well before the verse's 8 bars end
        phone.find_element(By.CSS_SELECTOR, "#c-encore-section-next button").click()
        for driver in (phone, tablet):
            wait_for(driver, lambda d: text_of(d, "section") == "chorus",
                     "the chorus comes after next section")

        # the tempo fader, moved by a pointer: both pages show the new tempo
        fader = phone.find_element(By.CSS_SELECTOR, "#c-encore-tempo input")
        width = fader.size["width"]
        ActionChains(phone).move_to_element_with_offset(fader, -width // 2 + 5, 0) \
            .click_and_hold().move_by_offset(int(width * 0.55), 0).release().perform()
        tempo = float(phone.find_element(By.CSS_SELECTOR, "#c-encore-tempo output").text)
        assert 60.0 < tempo < 230.0 and tempo != 240.0, tempo
        for driver in (phone, tablet):
            wait_for(driver, lambda d: text_of(d, "bpm") == f"{tempo:.1f}",
                     f"the tempo label shows {tempo}")

        # the x/y pad, touched at (0.75, 0.25): the other page has the point
        pad = phone.find_element(By.CSS_SELECTOR, "#c-encore-xy canvas")
        phone.execute_script("arguments[0].scrollIntoView({block: 'center'})", pad)
        size = pad.size
        ActionChains(phone).move_to_element_with_offset(
            pad, size["width"] // 4, size["height"] // 4).click().perform()
        point = wait_for(tablet, lambda d: pad_point(d)[0] > 0.7 and pad_point(d),
                         "the pad's point on the tablet")
        assert point == pytest.approx([0.75, 0.25], abs=0.03)

        # the tablet mutes the bass: the phone's mute toggle follows
        tablet.find_element(By.CSS_SELECTOR, "#c-encore-part-bass-mute button").click()
        wait_for(phone, lambda d: pressed(d, "encore-part-bass-mute"),
                 "the phone shows the bass muted")
        assert pressed(tablet, "encore-part-bass-mute")
        wait_for(phone, lambda d: "waiting" not in d.find_element(
            By.ID, "c-encore-part-bass-mute").get_attribute("class"), "the mute landed")
        for driver, name in ((phone, "stage_phone.png"), (tablet, "stage_tablet.png")):
            driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(0.3)
            driver.save_screenshot(str(shots / name))
        phone.execute_script("document.getElementById('controls').scrollIntoView()")
        time.sleep(0.3)
        phone.save_screenshot(str(shots / "stage_phone_controls.png"))
        time.sleep(3)  # three more bars (240 BPM) with the bass muted
        health = phone.execute_script("return page.state.health")
        assert set(health) >= {"underruns", "late", "fallbacks", "phrases_missed",
                               "ports_lost"}
    finally:
        phone.quit()
        tablet.quit()
    copy_to = os.environ.get("ENCORE_SCREENSHOTS")
    if copy_to:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(copy_to) / shot.name)

    process = live_set["process"]
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    output = live_set["log"].read_text()
    assert process.returncode == 0 and "stopped: {" in output, output
    assert "Traceback" not in output, output

    # song.jsonl: each touch is a control record, in order, on the bar it landed on
    records = [json.loads(line) for line in
               (live_set["set"] / "song.jsonl").read_text().splitlines()]
    controls = [r for r in records if r["type"] == "control"]
    order = [c["address"] for c in controls]
    firsts = [a for i, a in enumerate(order) if a not in order[:i]]
    assert firsts == ["/encore/section/next", "/encore/tempo", "/encore/xy",
                      "/encore/part/bass/mute"], order
    by_address = {c["address"]: c for c in controls}
    sections = {r["bar"]: r["section"] for r in records if r["type"] == "bar"}
    section_next = by_address["/encore/section/next"]
    after = section_next["after_bar"]
    first_chorus = min(b for b, s in sections.items() if s == "chorus" and b > after)
    verse_run = [b for b in range(first_chorus) if all(
        sections.get(k) == "verse" for k in range(b, first_chorus))]
    shown = [sections.get(b) for b in range(max(sections) + 1)]
    assert first_chorus <= after + 4, (after, shown)  # the next bar still to compose
    assert len(verse_run) < 8, f"the verse played its whole length: {after}, {shown}"
    tempo_changes = [c for c in controls if c["address"] == "/encore/tempo"]
    assert all(c["at_bar"] == c["after_bar"] + 1 for c in tempo_changes)
    assert tempo_changes[-1]["values"] == [pytest.approx(tempo, abs=0.01)]
    # the first change to the final value (a drag may send a value on the way there)
    tempo_change = next(c for c in tempo_changes
                        if c["values"] == [pytest.approx(tempo, abs=0.01)])
    xy = [c for c in controls if c["address"] == "/encore/xy"][-1]
    assert xy["values"] == pytest.approx([0.75, 0.25], abs=0.03)
    mute = by_address["/encore/part/bass/mute"]
    assert mute["values"] == [1]

    # song.mid: the tempo change on its bar line; bass notes before the mute, none after
    notes, tempi = midi_notes_and_tempi(live_set["set"] / "song.mid")
    assert (tempo_change["at_bar"] * 4.0, round(tempo, 1)) in tempi, tempi
    assert tempi[-1][1] == round(tempo, 1), tempi
    bass_bars = sorted({int(beat // 4) for channel, beat in notes if channel == BASS_CHANNEL})
    assert bass_bars and bass_bars[0] <= mute["after_bar"], "no bass before the mute"
    assert max(bass_bars) <= mute["after_bar"], \
        f"bass in bar {max(bass_bars)} after the mute landed on bar {mute['after_bar'] + 1}"
    assert max(b for b in sections) >= mute["after_bar"] + 3  # bars played muted
