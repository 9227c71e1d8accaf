"""The ``encore`` command.

    encore render [--patch P] [-o DIR] [--bars N] [--seed S] [--no-audio] ...
    encore stats song.jsonl
    encore plot song.jsonl [-o DIR]
    encore replay song.jsonl [-o DIR] [--no-audio] [--no-vocals]
    encore live [--patch P] [--bars N] [--record DIR] [--no-audio] [--dry-run] [--dashboard] [--web]
    encore devices
    encore doctor [--patch P] [--model-dir DIR]
    encore osc-map [--json | --readme README.md]
    encore layout open-stage-control|touchosc [-o FILE]
    encore convert magenta-js CHECKPOINT_DIR OUT [--name NAME]
    encore convert gpt2 HF_DIR OUT
    encore train musicvae --out DIR [--preset mel_2bar|trio_4bar] [--midi-dir DIR] ...
    encore train lyrics [--from HF_DIR --text FILE] --out DIR [--steps N] [--onnx DIR] ...
    encore train voice data|acoustic|vocoder|export|evaluate [--out DIR] ...
    (every train command: --device auto|cpu|cuda, --precision, and torchrun for many ranks)
    encore export musicvae CHECKPOINT.pt OUT_DIR

``render``, ``stats``, ``replay``, ``live``, ``devices``, ``doctor`` and ``osc-map`` need only the
runtime.
``convert``, ``train`` and ``export`` load the PyTorch code in ``export/`` on first use
and say how to install it when it is missing. Errors print ``encore: error: ...`` and exit
with status 2, as argparse does for a bad argument; :func:`main` returns 0 on success.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.output_files import claim
from engine.shipped import checkout_with_trainers

RENDER_FILES = ("song.mid", "song.wav", "song.jsonl")
RECORD_FILES = RENDER_FILES
REPLAY_FILES = ("song.mid", "song.wav")
PLOT_FILES = ("pianoroll.png", "latent.png")
EXPORT_EXTRA_MESSAGE = "the converter needs the export extra: pip install -e '.[export]'"
_EXPORT_EXTRA_MODULES = {"torch", "onnx", "music21", "tqdm"}


class _ExportExtraMissingError(Exception):
    pass


class _TrainersMissingError(Exception):
    pass


def _import_export(module: str):
    """Import a module of ``export/`` (PyTorch), or raise _ExportExtraMissingError without torch."""
    checkout = checkout_with_trainers()
    if checkout is None:
        raise _TrainersMissingError
    if str(checkout) not in sys.path:  # the console script's sys.path lacks the checkout
        sys.path.append(str(checkout))
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in _EXPORT_EXTRA_MODULES:
            raise _ExportExtraMissingError from err
        raise


# ---- argument types -------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ---- render ---------------------------------------------------------------------------
def _cmd_render(args: argparse.Namespace) -> None:
    from engine.patch import load_patch
    from engine.song.preflight import check_song_files
    from engine.song.render import render_song

    patch = load_patch(args.patch, validate_files=not args.no_audio)
    bars = args.bars or patch.song.bars or DEFAULT_RENDER_BARS
    if args.model:
        patch = _with_model(patch, args.model)
    out = claim(args.out if args.out is not None else Path("out"), RENDER_FILES,
                named=args.out is not None)
    check_song_files(patch, args.model_dir, audio=not args.no_audio)  # before any model
    result = render_song(patch, out, bars=bars, seed=args.seed, audio=not args.no_audio,
                         model_dir=args.model_dir)
    written = ", ".join(str(p) for p in (result.midi, result.wav, result.log) if p)
    print(f"wrote {written}")
    print(f"{result.bars} bars, {result.audio_seconds:.1f} s of music in "
          f"{result.wall_seconds:.2f} s ({result.speed:.0f}x real time); "
          f"onnxruntime provider: {result.provider}")
    if result.lines:
        print(f"lyrics: {result.lines} lines by {patch.lyrics.source}")
    if args.plot:
        from engine.song.plot import plot_log

        plots = plot_log(result.log)
        print(f"wrote {plots.pianoroll}, {plots.latent}")
    vocals = result.vocals
    if result.singer and vocals is not None:
        rtf = sorted(vocals.rtf)
        median = (f", real-time factor {rtf[len(rtf) // 2]:.2f} a phrase (max {rtf[-1]:.2f})"
                  if rtf else "")
        failed = f", {vocals.failed} failed ({vocals.last_error})" if vocals.failed else ""
        print(f"voice: {result.singer} sang {vocals.sung} phrases{median}{failed}")


def _with_model(patch, model: str):
    import dataclasses

    return dataclasses.replace(patch, song=dataclasses.replace(patch.song, model=model))


def _cmd_live(args: argparse.Namespace) -> None:
    import logging

    from engine.live.show import run_show
    from engine.patch import load_patch
    from engine.song.preflight import check_song_files

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    patch = load_patch(args.patch, validate_files=not args.no_audio)
    if args.model:
        patch = _with_model(patch, args.model)
    import dataclasses

    if args.dry_run:
        patch = dataclasses.replace(patch, midi=dataclasses.replace(patch.midi,
                                                                    backend="memory"))
    live_changes = {k: v for k, v in (("audio_device", args.audio_device),
                                      ("block_size", args.block_size)) if v is not None}
    if live_changes:
        patch = dataclasses.replace(patch, live=dataclasses.replace(patch.live, **live_changes))
    record = None if args.no_record else (
        claim(args.record, RECORD_FILES, named=True, fix="a set is recorded there; give a new "
              "folder to --record, or leave it out for a new sets/<date> folder")
        if args.record is not None else new_set_dir(Path("sets")))
    check_song_files(patch, args.model_dir, audio=not args.no_audio)  # before any worker
    if record is not None:
        print(f"recording the set's event log to {record}/song.jsonl")
    print(f"encore live: {patch.song.title}, {patch.song.tempo:g} BPM; Ctrl-C stops "
          f"(every sounding note is released)")
    if args.web:
        patch = dataclasses.replace(patch, web=dataclasses.replace(patch.web, enabled=True))
    if patch.web.enabled:
        _print_web_url(patch.web)
    run = run_show
    if args.dashboard and sys.stdout.isatty():
        from engine.live.dashboard import run_with_dashboard as run
    elif args.dashboard:
        print("--dashboard draws on a terminal and stdout is not one: playing without it")
    health = run(patch, model_dir=args.model_dir, record_dir=record,
                 audio=not args.no_audio, osc=not args.no_osc, bars=args.bars, seed=args.seed)
    print(f"stopped: {health.to_dict()}")


def _print_web_url(settings) -> None:
    """Where the stage page will be, and a QR code of it for a phone on the network."""
    from engine.live.web.server import page_url

    if settings.port == 0:
        print("stage page: on a free port; its address is logged when it is up")
        return
    url = page_url(settings.host, settings.port)
    print(f"stage page: {url}" + (f" (PIN {settings.pin})" if settings.pin else ""))
    if not settings.loopback:
        try:
            import segno
        except ImportError:
            return
        segno.make(page_url(settings.host, settings.port, settings.pin)).terminal(compact=True)


def new_set_dir(root: Path, now: float | None = None) -> Path:
    """A folder under ``root`` named for the start time that no earlier set uses."""
    import time

    stamp = time.strftime("%Y-%m-%d_%H%M%S", time.localtime(now))
    candidate, n = root / stamp, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stamp}_{n}"
    return candidate


def _cmd_devices(args: argparse.Namespace) -> None:
    from engine.live.midi_ports import list_outputs

    for backend in ("jack", "alsa"):
        try:
            names = list_outputs(backend)
        except OSError as err:
            print(f"MIDI ({backend}): unavailable: {err}")
            continue
        print(f"MIDI outputs ({backend}):" + ("" if names else " none"))
        for name in names:
            print(f"  {name}")
    try:
        from engine.live.audio_out import describe_devices

        print("Audio outputs:")
        print(describe_devices())
    except (OSError, RuntimeError) as err:
        print(f"Audio: unavailable: {err}")


def _cmd_doctor(args: argparse.Namespace) -> int:
    from engine.doctor import run_doctor

    return run_doctor(args.patch, model_dir=args.model_dir)


def _cmd_osc_map(args: argparse.Namespace) -> None:
    from engine.live.osc_table import TABLE, osc_map_markdown, osc_table_json, update_readme

    if args.readme is not None:
        print(f"{args.readme}: {'updated' if update_readme(args.readme) else 'up to date'}")
        return
    print(osc_table_json(TABLE) if args.json else osc_map_markdown(TABLE))


def _cmd_replay(args: argparse.Namespace) -> None:
    from engine.song.replay import replay_set

    out = claim(args.out if args.out is not None else args.log.parent / "replay",
                REPLAY_FILES, named=args.out is not None)
    result = replay_set(args.log, out, audio=not args.no_audio, vocals=not args.no_vocals,
                        model_dir=args.model_dir)
    written = ", ".join(str(p) for p in (result.midi, result.wav) if p)
    print(f"wrote {written}")
    kind = "live set" if result.live else "render"
    torn = "; a torn last line was left out" if result.torn else ""
    print(f"replayed {result.bars} bars of a {kind} ({result.audio_seconds:.1f} s of music in "
          f"{result.wall_seconds:.2f} s), {result.lines} lyric lines{torn}")
    if result.fallback_bars:
        print(f"{result.fallback_bars} bars were played from the last good bar (generation "
              "fell behind), as logged")
    changes = ", ".join(f"{bpm:g} BPM at bar {bar}" for bar, bpm in result.tempo_changes)
    print(f"controls replayed: {result.controls}" + (f"; tempo: {changes}" if changes else ""))
    if result.skipped:
        print("not replayed: " + ", ".join(f"{target} x{n}"
                                           for target, n in sorted(result.skipped.items())))
    if result.singer and result.vocals is not None:
        print(f"voice: {result.singer} sang {result.vocals.sung} phrases")


def _cmd_plot(args: argparse.Namespace) -> None:
    from engine.song.plot import plot_log

    if args.out is not None:
        claim(args.out, PLOT_FILES, named=True)
    plots = plot_log(args.log, args.out)
    print(f"wrote {plots.pianoroll}, {plots.latent}")


def _cmd_layout(args: argparse.Namespace) -> None:
    from engine.live.layouts import write_layout

    path = write_layout(args.app, args.out)
    print(f"wrote {path} ({args.app} layout of the OSC address table)")


def _cmd_stats(args: argparse.Namespace) -> None:
    from engine.song.stats import format_stats, song_stats

    print(format_stats(song_stats(args.log)))


# ---- PyTorch side (export extra) --------------------------------------------------------
def _cmd_convert_magenta_js(args: argparse.Namespace) -> None:
    convert = _import_export("export.convert_magenta_js").convert
    for path in convert(args.checkpoint_dir, args.out, name=args.name):
        print(f"wrote {path}")


def _pass_through(module: str, prog: str, args: argparse.Namespace) -> None:
    """Run a trainer's own ``main`` with the arguments ``encore`` did not read, under the
    name ``prog`` (its argparse help says ``encore train ...``)."""
    train_main = _import_export(module).main
    program, sys.argv[0] = sys.argv[0], prog
    try:
        train_main(list(args.train_args))
    finally:
        sys.argv[0] = program


def _cmd_train_musicvae(args: argparse.Namespace) -> None:
    _pass_through("export.train_musicvae", "encore train musicvae", args)


def _cmd_convert_gpt2(args: argparse.Namespace) -> None:
    from engine.lyrics.gpt2_runner import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE

    hf_folder = _import_export("export.hf_folder")  # before torch and transformers load:
    claim(args.out, (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE, hf_folder.HF_CONFIG_FILE),
          named=True, fix="convert into a new folder, or move the old model away first")
    hf_folder.check_hf_folder(args.hf_dir)  # a bad folder is refused in milliseconds
    export_gpt2 = _import_export("export.gpt2_onnx").export_gpt2
    config = export_gpt2(args.hf_dir, args.out, opset=args.opset, tolerance=args.tolerance,
                         int8=args.int8)
    int8_file = [config["int8"]["file"]] if "int8" in config else []
    for name in ("model.onnx", *int8_file, "tokenizer.json", "encore_gpt2.json"):
        print(f"wrote {args.out / name}")
    parity = config["parity"]
    print(f"parity with transformers on a {parity['prompt_tokens']}-token prompt: logits max "
          f"|diff| {parity['full_logits_max_abs_diff']:.2e} (whole prompt), "
          f"{parity['cached_logits_max_abs_diff']:.2e} (token by token through the cache), "
          f"{parity['max_relative_diff']:.1e} relative to the largest logit "
          f"({parity['reference_logits_max_abs']:.1f}; tolerance {parity['tolerance']:g}); "
          f"greedy {parity['greedy_tokens']} tokens identical: {parity['greedy_identical']}")
    if "int8" in config:
        q = config["int8"]
        print(f"int8 weights: logits max |diff| {q['logits_max_abs_diff_vs_float']:.2e} from "
              f"the float graph; greedy the same for {q['greedy_tokens_before_first_difference']}"
              f" of {q['greedy_tokens']} tokens")


def _cmd_train_lyrics(args: argparse.Namespace) -> None:
    train_main = _import_export("export.train_lyrics").main
    rest = list(args.train_args)
    fine_tune = any(a == "--from" or a.startswith("--from=") for a in rest)
    if not fine_tune and ("-h" in rest or "--help" in rest):
        print("encore train lyrics: without --from, trains the lyricist from scratch on "
              "public-domain verse (options below); with --from HF_DIR --text FILE, fine-tunes "
              "that GPT-2 folder (`encore train lyrics --from X --help` lists its options).\n")
    train_main(["finetune" if fine_tune else "scratch", *rest])


def _cmd_train_voice(args: argparse.Namespace) -> None:
    _pass_through("export.train_voice", "encore train voice", args)


def _cmd_export_musicvae(args: argparse.Namespace) -> None:
    from engine.untrusted import check_file

    if not args.checkpoint.exists():
        raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint; train one with "
                                "`encore train musicvae --out DIR` (DIR/last.pt)")
    check_file(args.checkpoint, "give the .pt file `encore train musicvae` wrote")  # before
    # torch loads (seconds): a FIFO or a folder is refused at once
    load_checkpoint = _import_export("export.musicvae").load_checkpoint
    export_all = _import_export("export.musicvae_onnx").export_all
    model, _ = load_checkpoint(args.checkpoint)
    for path in export_all(model, args.out_dir):
        print(f"wrote {path}")


# ---- the parser ----------------------------------------------------------------------
DEFAULT_RENDER_BARS = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encore",
                                     description="Encore: a generative music engine.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    render = commands.add_parser(
        "render", help="render a song offline to DIR/song.mid, song.wav and song.jsonl",
        description="Play a patch's endless song through the conductor, timed on an "
                    "offline tempo map, and write DIR/song.mid (a track per part), "
                    "DIR/song.wav (the built-in FluidSynth) and DIR/song.jsonl (the event "
                    "log), as fast as it can.")
    render.add_argument("--patch", default="default", metavar="PATCH",
                        help="a patch file or the name of one in patches/ (default: default)")
    render.add_argument("-o", "--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: out, or out_2, ... when out holds an "
                             "earlier render: nothing is overwritten)")
    render.add_argument("--bars", type=_positive_int, default=None,
                        help=f"bars to render (default: the patch's [song] bars, else "
                             f"{DEFAULT_RENDER_BARS})")
    render.add_argument("--seed", type=int, default=None,
                        help="song seed (default: the patch's [song] seed)")
    render.add_argument("--model", help="override the patch's model (a name or a "
                                        ".decoder.onnx path)")
    render.add_argument("--model-dir", type=Path, metavar="DIR",
                        help="look for models here first")
    render.add_argument("--no-audio", action="store_true",
                        help="write only the MIDI file and the event log")
    render.add_argument("--plot", action="store_true",
                        help="also draw DIR/pianoroll.png and DIR/latent.png (see `encore plot`)")
    render.set_defaults(func=_cmd_render)

    live = commands.add_parser(
        "live", help="play the song live: MIDI out, the built-in synth, OSC control",
        description="Play a patch's endless song in real time until Ctrl-C or SIGTERM: "
                    "parts with a port go to MIDI outputs, the others to the built-in "
                    "synth through the audio output; a tablet steers it over OSC.")
    live.add_argument("--patch", default="default", metavar="PATCH")
    live.add_argument("--bars", type=_positive_int, default=None,
                      help="stop after this many bars (default: play until stopped)")
    live.add_argument("--seed", type=int, default=None)
    live.add_argument("--model", help="override the patch's model")
    live.add_argument("--model-dir", type=Path, metavar="DIR")
    live.add_argument("--record", type=Path, default=None, metavar="DIR",
                      help="where the set's event log goes (default: a new folder "
                           "sets/YYYY-MM-DD_HHMMSS, so no earlier set is overwritten)")
    live.add_argument("--no-record", action="store_true")
    live.add_argument("--no-audio", action="store_true", help="MIDI only, no built-in synth")
    live.add_argument("--no-osc", action="store_true", help="no OSC server")
    live.add_argument("--audio-device", metavar="NAME",
                      help="audio output whose name contains NAME (overrides [live])")
    live.add_argument("--block-size", type=_positive_int, metavar="FRAMES",
                      help="audio block size in frames (overrides [live] block_size)")
    live.add_argument("--dry-run", action="store_true",
                      help="MIDI goes to memory ports, nowhere (audio still plays)")
    live.add_argument("--dashboard", action="store_true",
                      help="a stage dashboard in the terminal (bar, section, lyric, parts, "
                           "health) with keys: p panic, n next section, f freeze, q quit")
    live.add_argument("--web", action="store_true",
                      help="serve the stage page (steer and watch from a browser; [web] in the "
                           "patch sets host, port, allow and pin) and print its address")
    live.set_defaults(func=_cmd_live)

    devices = commands.add_parser("devices", help="list MIDI outputs and audio devices")
    devices.set_defaults(func=_cmd_devices)

    doctor = commands.add_parser(
        "doctor", help="check what a gig needs on this machine, and how to fix what is not",
        description="Check the patch, the SoundFont, audio outputs, MIDI ports, ONNX Runtime, "
                    "the song model's and the lyricist's speed, the singer, the OSC port and "
                    "the disk space for recording: one line each, OK, WARN or FAIL with the "
                    "fix. Exits 1 when anything FAILs.")
    doctor.add_argument("--patch", default="default", metavar="PATCH")
    doctor.add_argument("--model-dir", type=Path, metavar="DIR")
    doctor.set_defaults(func=_cmd_doctor)

    osc_map = commands.add_parser("osc-map", help="print the OSC address table")
    osc_map.add_argument("--json", action="store_true", help="as JSON (for tablet layouts)")
    osc_map.add_argument("--readme", type=Path, metavar="FILE",
                         help="rewrite the map between the osc-map markers in this Markdown "
                              "file (README.md)")
    osc_map.set_defaults(func=_cmd_osc_map)

    layout = commands.add_parser(
        "layout", help="write a tablet layout generated from the OSC address table",
        description="Write a control surface for every address in the OSC table: an Open "
                    "Stage Control session (.json) or a TouchOSC document (.tosc). Open it in "
                    "the app and point the app at the engine's [osc] host and port.")
    layout.add_argument("app", choices=("open-stage-control", "touchosc"), metavar="APP",
                        help="open-stage-control or touchosc")
    layout.add_argument("-o", "--out", default=None, metavar="FILE",
                        help="where to write it (default: encore.json for Open Stage Control, "
                             "encore.tosc for TouchOSC, in the current folder)")
    layout.set_defaults(func=_cmd_layout)

    stats = commands.add_parser("stats", help="musical figures of a render's event log")
    stats.add_argument("log", type=Path, metavar="LOG", help="a song.jsonl")
    stats.set_defaults(func=_cmd_stats)

    plot = commands.add_parser(
        "plot", help="draw a set's piano roll and latent trajectory as PNGs",
        description="Draw DIR/pianoroll.png (melody, bass and chords on a pitch axis, the "
                    "drums in a strip, sections shaded and named, lyric lines under the bars "
                    "where they are sung) and DIR/latent.png (every bar's latent vector, "
                    "projected by PCA, joined in time order, coloured by section) from an "
                    "event log.")
    plot.add_argument("log", type=Path, metavar="LOG", help="a song.jsonl")
    plot.add_argument("-o", "--out", type=Path, default=None, metavar="DIR",
                      help="output folder (default: the folder LOG is in)")
    plot.set_defaults(func=_cmd_plot)

    replay = commands.add_parser(
        "replay", help="make song.mid and song.wav again from a set's event log",
        description="Re-render a recorded set (the song.jsonl of `encore render` or `encore "
                    "live`) from its event log alone: the logged notes and lyric lines into "
                    "DIR/song.mid, the built-in FluidSynth into DIR/song.wav; a tablet's "
                    "mutes, levels and tempo changes are replayed from the bar after they "
                    "were applied. No model runs.")
    replay.add_argument("log", type=Path, metavar="LOG", help="a song.jsonl")
    replay.add_argument("-o", "--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: replay/ beside LOG; never LOG's own "
                             "folder, where the set's recording is)")
    replay.add_argument("--no-audio", action="store_true", help="write only song.mid")
    replay.add_argument("--no-vocals", action="store_true",
                        help="leave the voice out of song.wav (else the patch's singer sings "
                             "the lines again, when this machine has it)")
    replay.add_argument("--model-dir", type=Path, metavar="DIR",
                        help="look for voicebanks here first")
    replay.set_defaults(func=_cmd_replay)

    convert = commands.add_parser("convert", help="convert weights you bring to Encore models")
    convert_kinds = convert.add_subparsers(dest="kind", metavar="KIND", required=True)
    magenta = convert_kinds.add_parser(
        "magenta-js", help="a magenta.js MusicVAE checkpoint folder -> ONNX models",
        description="Convert a magenta.js MusicVAE checkpoint (weights_manifest.json and "
                    "its shards) into Encore ONNX models.")
    magenta.add_argument("checkpoint_dir", type=Path, metavar="DIR")
    magenta.add_argument("out", type=Path, metavar="OUT")
    magenta.add_argument("--name", help="model name (default: the folder's name)")
    magenta.set_defaults(func=_cmd_convert_magenta_js)
    gpt2 = convert_kinds.add_parser(
        "gpt2", help="a Hugging Face GPT-2 folder -> an ONNX lyricist with a key/value cache",
        description="Export a local Hugging Face GPT-2 folder (ours from `encore train "
                    "lyrics`, or a downloaded gpt2 / distilgpt2) to OUT/model.onnx, "
                    "OUT/tokenizer.json and OUT/encore_gpt2.json, checking that ONNX Runtime "
                    "matches transformers.")
    gpt2.add_argument("hf_dir", type=Path, metavar="HF_DIR")
    gpt2.add_argument("out", type=Path, metavar="OUT")
    gpt2.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default 17)")
    gpt2.add_argument("--tolerance", type=float, default=1e-5,
                      help="largest logit difference from transformers accepted, relative to "
                           "the largest |logit| (default 1e-5; float32 lands near 1e-6)")
    gpt2.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                      help="also write OUT/model_int8.onnx, int8 weight matrices (ONNX Runtime "
                           "dynamic quantization): 2-4x faster per token at 768 wide, slightly "
                           "less accurate; the lyricist prefers it. Default: only for models "
                           "of 50 M parameters or more (distilgpt2, gpt2); the float "
                           "model.onnx is always written")
    gpt2.set_defaults(func=_cmd_convert_gpt2)

    train = commands.add_parser("train", help="train a model (needs the export extra)")
    train_kinds = train.add_subparsers(dest="kind", metavar="KIND", required=True)
    train_kinds.add_parser(
        "musicvae", add_help=False,
        help="train a MusicVAE: --out DIR [--preset mel_2bar|trio_4bar] [--midi-dir DIR] "
             "[--init CKPT.pt] [--minutes M]; --init takes a .pt training checkpoint "
             "(e.g. runs/trio_4bar/last.pt), not a shipped ONNX model; "
             "`encore train musicvae --help` lists every option",
    ).set_defaults(func=_cmd_train_musicvae, passes_through=True)
    train_kinds.add_parser(
        "lyrics", add_help=False,
        help="train the GPT-2 lyricist: --out DIR [--steps N] [--onnx OUT] from scratch on "
             "public-domain verse, or fine-tune a GPT-2 folder with --from HF_DIR --text FILE; "
             "`encore train lyrics --help` lists every option",
    ).set_defaults(func=_cmd_train_lyrics, passes_through=True)
    train_kinds.add_parser(
        "voice", add_help=False,
        help="train our own voice: data | acoustic | vocoder | export | evaluate, e.g. "
             "`encore train voice acoustic --out runs/encore_voice --minutes 30`; "
             "`encore train voice --help` lists every option",
    ).set_defaults(func=_cmd_train_voice, passes_through=True)

    export = commands.add_parser("export", help="export a trained checkpoint to ONNX")
    export_kinds = export.add_subparsers(dest="kind", metavar="KIND", required=True)
    musicvae = export_kinds.add_parser(
        "musicvae", help="CKPT.pt -> OUT_DIR/<name>.{encoder,decoder}.onnx",
        description="Export a MusicVAE training checkpoint (.pt) to ONNX encoder and "
                    "decoder graphs with Encore metadata.")
    musicvae.add_argument("checkpoint", type=Path, metavar="CKPT")
    musicvae.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    musicvae.set_defaults(func=_cmd_export_musicvae)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``encore``; returns 0 (1 when ``encore doctor`` finds a FAIL), or raises
    SystemExit(2) with a message on an error."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_through", False):
        args.train_args = rest
    elif rest:
        parser.error(f"unrecognized arguments for `encore {args.command}`: {' '.join(rest)} "
                     f"(see `encore {args.command} --help`)")
    try:
        status = args.func(args)
    except _ExportExtraMissingError:
        parser.exit(2, f"{EXPORT_EXTRA_MESSAGE}\n")
    except ModuleNotFoundError as err:  # the export extra, imported late by a converter
        if (err.name or "").split(".")[0] not in _EXPORT_EXTRA_MODULES:
            raise
        parser.exit(2, f"{EXPORT_EXTRA_MESSAGE}\n")
    except _TrainersMissingError:
        parser.exit(2, f"encore: error: `encore {args.command}` needs the trainers (PyTorch), "
                       "which an installed wheel does not carry: run it from a source checkout "
                       "(`make setup` there installs them)\n")
    except (ValueError, OSError) as err:  # every reader's refusal, and the OS's
        parser.exit(2, f"encore: error: {err}\n")
    except (MemoryError, RecursionError) as err:  # a last guard: no reader should get here
        parser.exit(2, f"encore: error: {type(err).__name__} while reading the input; a file "
                       "given is larger or deeper than Encore reads (please report it)\n")
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
