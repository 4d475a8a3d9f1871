#!/usr/bin/env python3
"""Writes the folk-songs music suite's data from the Essen folk-song collection in music21's corpus.

What: each chosen tune of each collection (Chinese Han, German, ...) becomes one clip: its first
`--clip-seconds` as a one-instrument MIDI file (a General MIDI program drawn, seeded, from the
collection's instrument set), a render job for `crates/data-audio/examples/render_folk_songs.rs`,
and a line of the project's folder format (crates/data-audio/src/music/folder.rs):

    <out>/dataset.json                      what was built, from what, and the licence
    <out>/<style>/{train,val,test}.jsonl    one clip a line; `path` is relative to <out>/<style>
    <out>/<style>/audio/<clip>.wav          written by the render step
    <out>/midi/<style>/<clip>.mid           the rendered scores, kept to look at
    <out>/render_jobs.jsonl                 {"midi", "wav", "seconds", "peak"}, relative to <out>

Why this way: the Essen tunes ship as ABC text inside the music21 wheel (a registry package), so
the data needs no download beyond it, and the style contrast is real (Han tunes are pentatonic,
German ones diatonic). music21's ABC parser reads the notes (accidentals, ties, tuplets, octave
marks); the header fields (N: id, O: origin, R: genre, M: meter, K: key) are read from the text.
Splits are by work: a tune's Essen id without its variant letter (Q0001 and its variant Q0001A are
one work), so no variant of a test tune is trained on.

Licence: the Essen encodings may be used and distributed non-commercially in music21 only, so the
output is generated where it is used and never committed or redistributed.

Run by ci/folk-songs.sh; by hand: target/folk-venv/bin/python ci/folk_songs.py --out DIR.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import struct
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# General MIDI programs (0-based) and the names prompts use for them.
INSTRUMENTS = {
    0: "piano",
    21: "accordion",
    22: "harmonica",
    24: "nylon guitar",
    40: "violin",
    56: "trumpet",
    68: "oboe",
    71: "clarinet",
    72: "piccolo",
    73: "flute",
    74: "recorder",
    75: "pan flute",
    77: "shakuhachi",
    105: "banjo",
    106: "shamisen",
    107: "koto",
    109: "bagpipe",
    110: "fiddle",
}
DEFAULT_PROGRAMS = [0, 24, 40, 73, 21, 68]


@dataclass
class Collection:
    """A style: Essen files (stems under corpus/essenFolksong), how its prompts name it, and the
    General MIDI programs its clips are played on."""

    files: list[str]
    noun: str
    programs: list[int] = field(default_factory=lambda: list(DEFAULT_PROGRAMS))
    # Han genres (R:) are the tunes' own genre names (Xiaodiao, Shange, Haozi); German ones are
    # long German descriptions, kept as metadata only.
    genre_in_prompt: bool = False


# The style names the suite chooses source and target by. Any of them can be either.
COLLECTIONS = {
    "han": Collection(["han1", "han2"], "Chinese folk song", [75, 77, 107, 110, 106, 73], True),
    "german": Collection(
        ["altdeu10", "altdeu20"]
        + [f"ballad{i}0" for i in range(1, 9)]
        + ["boehme10", "boehme20", "dva0", "erk5", "erk10", "erk20", "erk30", "fink0",
           "kinder0", "zuccal0"],
        "German folk song",
        [21, 40, 71, 0, 74, 56],
    ),
    "luxembourg": Collection(["lux"], "Luxembourgish folk song"),
    "lorraine": Collection(["lot"], "Lorraine folk song"),
    "irish": Collection(["irl"], "Irish folk song", [40, 73, 72, 109, 21, 105]),
}

# Parts of an O: (origin) field too broad to say where a tune is from within its collection.
BROAD_PLACES = {
    "europa", "mitteleuropa", "osteuropa", "suedosteuropa", "westeuropa", "nordeuropa",
    "asien", "ostasien", "china", "deutschland", "luxemburg", "lothringen", "irland",
}
# German genre words that occur in Han R: fields, in English.
GENRE_WORDS = {
    "Tanzlied": "dance song", "Kinderlied": "children's song", "Arbeitslied": "work song",
    "Wiegenlied": "lullaby", "Xiaodao": "Xiaodiao",
}
KEY_NAMES = {"H": "B", "Es": "Eb", "As": "Ab", "Des": "Db", "Ges": "Gb", "Fis": "F#", "Cis": "C#"}
LICENCE = (
    "Essen folk-song encodings: non-commercial distribution and use in music21 only "
    "(music21/corpus/essenFolksong/license.txt). Generated data: do not commit or redistribute."
)
TICKS = 480  # MIDI ticks per quarter note
VELOCITY = 90
# Seconds of silence at most before each note's end (a tenth of shorter notes): a repeated pitch
# is then heard as two notes, as a player would articulate it.
ARTICULATION_S = 0.04
SAMPLE_RATE = 32000  # what render_folk_songs writes by default


@dataclass
class Tune:
    style: str
    file: str  # Essen file stem, e.g. han1
    number: int  # X: field
    text: str  # the tune's ABC, from X: on
    fields: dict[str, list[str]]  # header fields, in order of appearance

    @property
    def clip_id(self) -> str:
        return f"{self.file}-{self.number:04d}"

    def first(self, key: str) -> str:
        values = self.fields.get(key)
        return values[0].strip() if values else ""


def essen_folder() -> Path:
    import music21

    folder = Path(music21.__file__).parent / "corpus" / "essenFolksong"
    if not folder.is_dir():
        sys.exit(f"error: music21 {music21.__version__} has no {folder}")
    return folder


def read_tunes(folder: Path, style: str, stem: str) -> list[Tune]:
    """The tunes of one Essen file: ABC text split at its X: lines, header fields read."""
    path = folder / f"{stem}.abc"
    if not path.is_file():
        sys.exit(f"error: no Essen file {path} (collection {style})")
    text = path.read_text(encoding="utf-8", errors="replace")
    tunes = []
    for chunk in re.split(r"^(?=X:)", text, flags=re.M):
        if not chunk.startswith("X:"):
            continue
        fields: dict[str, list[str]] = {}
        for line in chunk.splitlines():
            m = re.match(r"^([A-Za-z]):\s*(.*)$", line)
            if m:
                fields.setdefault(m.group(1), []).append(m.group(2).rstrip("] ").strip())
        m = re.match(r"X:\s*(\d+)", chunk)
        number = int(m.group(1)) if m else len(tunes) + 1
        tunes.append(Tune(style, stem, number, chunk, fields))
    return tunes


def tune_id(tune: Tune) -> str:
    """The Essen id (first N: field that is one, e.g. Q0001A), or '' when it has none."""
    for note in tune.fields.get("N", []):
        token = re.split(r"[\s,;]+", note.strip())[0] if note.strip() else ""
        if re.fullmatch(r"[A-Z]+[A-Z0-9]*[0-9]+[A-Z]*", token):
            return token
    return ""


def work_of(tune: Tune) -> str:
    """The work: the id without its variant letters; tunes without a real id are their own."""
    ident = tune_id(tune)
    m = re.fullmatch(r"([A-Z]+[A-Z0-9]*?[0-9]+)[A-Z]*", ident)
    if not m or re.fullmatch(r"[A-Z]+0+", m.group(1)):  # C0000 is a placeholder id
        return tune.clip_id
    return m.group(1)


def place_of(origin: str) -> str:
    """The first part of an O: field narrower than the country, e.g. Shaanxi, Schlesien."""
    for part in origin.split(","):
        part = part.strip()
        word = part.lower().split(" ")[0].split("/")[0]
        if part and word not in BROAD_PLACES and part.lower() not in BROAD_PLACES:
            return part
    return ""


def genre_of(tune: Tune) -> str:
    raw = tune.first("R")
    genre = re.split(r"[.,;:(]", raw)[0].strip()
    genre = GENRE_WORDS.get(genre, genre)
    return "" if not genre or "?" in genre else genre


def meter_of(tune: Tune) -> str:
    meter = tune.first("M")
    if re.fullmatch(r"\d+/\d+", meter):
        return meter
    return "free meter" if meter.lower().startswith(("none", "frei")) else meter


def key_of(tune: Tune) -> str:
    key = tune.first("K")
    return KEY_NAMES.get(key, key)


def parse_notes(job: tuple[str, str]) -> tuple[str, list[tuple[float, float, int]] | None, float, str]:
    """Worker: (clip id, ABC) -> (clip id, notes as (start, end, MIDI pitch) in quarter notes,
    tune length in quarter notes, error). Tied notes are merged; grace notes dropped."""
    clip_id, text = job
    try:
        from music21 import converter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = converter.parse(text, format="abc")
        part = score.parts[0] if getattr(score, "parts", None) else score
        notes: list[tuple[float, float, int]] = []
        for el in part.flatten().notes:
            length = float(el.quarterLength)
            if el.duration.isGrace or length <= 0:
                continue
            start = float(el.offset)
            for pitch in el.pitches:
                midi = int(pitch.midi)
                if not 0 <= midi <= 127:
                    continue
                tied = el.tie is not None and el.tie.type in ("stop", "continue")
                prev = next((i for i in range(len(notes) - 1, -1, -1) if notes[i][2] == midi), None)
                if tied and prev is not None and abs(notes[prev][1] - start) < 1e-6:
                    notes[prev] = (notes[prev][0], start + length, midi)
                else:
                    notes.append((start, start + length, midi))
        if not notes:
            return clip_id, None, 0.0, "no notes"
        return clip_id, notes, float(part.highestTime), ""
    except Exception as e:  # music21 raises many kinds on malformed ABC; count, don't stop
        return clip_id, None, 0.0, f"{type(e).__name__}: {e}"[:200]


def vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(notes: list[tuple[float, float, int]], program: int, bpm: float, clip_q: float) -> bytes:
    """A format-0 Standard MIDI File: tempo, `program` on channel 0, the notes that start within
    `clip_q` quarter notes (ended by then), end of track at `clip_q`. Each note is shortened a
    little (ARTICULATION_S) so repeated pitches are heard as separate notes."""
    events: list[tuple[int, int, bytes]] = []  # (tick, order, bytes): note-offs before note-ons
    for start, end, pitch in notes:
        if start >= clip_q:
            continue
        length = end - start
        end = min(start + length - min(0.1 * length, ARTICULATION_S * bpm / 60), clip_q)
        on, off = round(start * TICKS), max(round(end * TICKS), round(start * TICKS) + 1)
        events.append((on, 1, bytes([0x90, pitch, VELOCITY])))
        events.append((off, 0, bytes([0x80, pitch, 64])))
    events.sort(key=lambda e: (e[0], e[1]))
    tempo = round(60_000_000 / bpm)
    track = bytearray(b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big"))
    track += b"\x00" + bytes([0xC0, program])
    tick = 0
    for at, _, data in events:
        track += vlq(at - tick) + data
        tick = at
    track += vlq(max(round(clip_q * TICKS) - tick, 0)) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def parsed_until(pool, tunes: list[Tune], want: int | None, clips: list[dict]):
    """Parse results of `tunes` in order, in batches sized to what is still missing, until
    `clips` (filled by the caller) holds `want`: a pool parses everything it is given, so asking
    for all 5,979 German tunes to keep 600 would waste minutes."""
    pos = 0
    while pos < len(tunes) and (want is None or len(clips) < want):
        size = len(tunes) - pos if want is None else int((want - len(clips)) * 1.25) + 8
        batch = tunes[pos:pos + size]
        pos += len(batch)
        for result in pool.imap(parse_notes, [(t.clip_id, t.text) for t in batch], chunksize=4):
            if want is None or len(clips) < want:
                yield result


def split_by_work(clips: list[dict], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """work -> split. Works are shuffled with `seed` and dealt so val and test get about their
    fraction of the clips: a work joins a held-out split only if that brings it nearer its target
    (the rule of peftbench_data_audio::music::split_by_work), or if the split has none yet."""
    works = sorted({c["work"] for c in clips})
    random.Random(seed).shuffle(works)
    size: dict[str, int] = {}
    for c in clips:
        size[c["work"]] = size.get(c["work"], 0) + 1
    total = len(clips)
    target = {"test": fractions[2] * total, "val": fractions[1] * total}
    have = {"test": 0, "val": 0}
    side = {}
    for work in works:
        n = size[work]
        side[work] = "train"
        for split in ("test", "val"):
            # A held-out split asked for gets one work even when it is short of half a clip's
            # worth (a tiny run), so it is never empty while there are works to spare.
            first = have[split] == 0 and target[split] > 0 and len(works) >= 3
            if first or abs(have[split] + n - target[split]) < abs(have[split] - target[split]):
                have[split] += n
                side[work] = split
                break
    return side


def parse_counts(spec: str, styles: list[str]) -> dict[str, int | None]:
    """`--tunes`: `600` for every collection, or `german=600,han=all`; None means all."""
    counts: dict[str, int | None] = {}
    for item in spec.split(","):
        name, _, value = item.strip().rpartition("=")
        if name and name not in styles:
            sys.exit(f"error: --tunes {spec}: {name!r} is not among the collections {styles}")
        if value != "all" and not value.isdigit():
            sys.exit(f"error: --tunes {spec}: {value!r} is neither a count nor 'all'")
        for style in ([name] if name else styles):
            counts[style] = None if value == "all" else int(value)
    return counts


def parse_collections(spec: str) -> dict[str, Collection]:
    """`--collections`: known names (han, german, ...) or `name=stem+stem` for any Essen files."""
    chosen = {}
    for item in spec.split(","):
        name, _, files = item.strip().partition("=")
        if files:
            chosen[name] = Collection(files.split("+"), "folk song")
        elif name in COLLECTIONS:
            chosen[name] = COLLECTIONS[name]
        else:
            sys.exit(f"error: unknown collection {name!r}; known: {', '.join(COLLECTIONS)}, "
                     "or name=file+file with Essen file stems")
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output root (the dataset folder)")
    ap.add_argument("--collections", default="han,german",
                    help=f"comma list of {', '.join(COLLECTIONS)} or name=stem+stem (default han,german)")
    ap.add_argument("--tunes", default=None,
                    help="clips per collection: N for all, or name=N|all,... (default: german 600, "
                         "every other collection all its tunes)")
    ap.add_argument("--clip-seconds", type=float, default=10.0, help="clip length; shorter tunes are skipped")
    ap.add_argument("--bpm", type=float, default=120.0, help="quarter notes a minute (Essen gives no tempo)")
    ap.add_argument("--tempo-jitter", type=float, default=0.0,
                    help="scale each clip's tempo by a seeded factor in [1-j, 1+j] (default 0)")
    ap.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions of clips, by work")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak", type=float, default=0.5, help="render: scale each clip to this peak (0: as synthesised)")
    ap.add_argument("--soundfont-name", default="TimGM6mb")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import music21

    started = time.time()
    collections = parse_collections(args.collections)
    styles = list(collections)
    # Every tune but German's: 600 of its 5,979 keep the default run to about two minutes on 2
    # cores (--tunes german=all for all of them).
    counts = {s: (600 if s == "german" else None) for s in styles}
    if args.tunes:
        counts.update(parse_counts(args.tunes, styles))
    fractions = tuple(float(x) for x in args.split.split(","))
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        sys.exit(f"error: --split {args.split}: three fractions summing to 1")
    folder = essen_folder()
    print(f"music21 {music21.__version__}: Essen files in {folder}")

    # The candidates of each collection, in a seeded order; parsed until enough are long enough.
    candidates: dict[str, list[Tune]] = {}
    for style, coll in collections.items():
        tunes = [t for stem in coll.files for t in read_tunes(folder, style, stem)]
        random.Random(f"{args.seed}:{style}").shuffle(tunes)
        candidates[style] = tunes
        print(f"  {style}: {len(tunes)} tunes in {', '.join(coll.files)}")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for style in styles:  # only what this run writes; other styles' folders stay
        for stale in (out / style, out / "midi" / style):
            if stale.exists():
                shutil.rmtree(stale)
    summary: dict[str, dict] = {}
    jobs: list[dict] = []
    clips_of: dict[str, list[dict]] = {}
    with multiprocessing.Pool(max(1, args.workers)) as pool:
        for style, coll in collections.items():
            t0 = time.time()
            want = counts.get(style)
            by_id = {t.clip_id: t for t in candidates[style]}
            stats = {"tunes": len(by_id), "parsed": 0, "too_short": 0, "failed": 0, "clips": 0}
            errors: list[str] = []
            clips: list[dict] = []
            for clip_id, notes, length_q, error in parsed_until(pool, candidates[style], want, clips):
                if notes is None:
                    stats["failed"] += 1
                    errors.append(f"{clip_id}: {error}")
                    continue
                stats["parsed"] += 1
                tune = by_id[clip_id]
                # One stream per clip and purpose: a clip's instrument does not change with the
                # tune count or the tempo jitter.
                scale = 1.0 + random.Random(f"{args.seed}:{clip_id}:tempo").uniform(
                    -args.tempo_jitter, args.tempo_jitter)
                bpm = args.bpm * scale
                clip_q = args.clip_seconds * bpm / 60.0
                if length_q < clip_q:
                    stats["too_short"] += 1
                    continue
                program = random.Random(f"{args.seed}:{clip_id}:program").choice(coll.programs)
                instrument = INSTRUMENTS.get(program, f"GM program {program}")
                ident = tune_id(tune)
                name = f"{clip_id}_{ident or 'noid'}_p{program}"
                midi_path = out / "midi" / style / f"{name}.mid"
                midi_path.parent.mkdir(parents=True, exist_ok=True)
                midi_path.write_bytes(midi_bytes(notes, program, bpm, clip_q))
                wav_rel = f"audio/{name}.wav"
                genre, place, meter = genre_of(tune), place_of(tune.first("O")), meter_of(tune)
                prompt = ", ".join(
                    p for p in [coll.noun, genre if coll.genre_in_prompt else "", place, meter, instrument] if p)
                clips.append({
                    "path": wav_rel,
                    "prompt": prompt,
                    "work": work_of(tune),
                    "duration": args.clip_seconds,
                    "sample_rate": SAMPLE_RATE,
                    "style": style,
                    "tune": ident or clip_id,
                    "title": tune.first("T"),
                    "region": tune.first("O"),
                    "place": place,
                    "genre": tune.first("R"),
                    "meter": tune.first("M"),
                    "key": key_of(tune),
                    "gm_program": program,
                    "instrument": instrument,
                    "collection": tune.file,
                    "x": tune.number,
                    "offset_s": 0.0,
                    "tempo_bpm": round(bpm, 3),
                    "tempo_scale": round(scale, 4),
                    "notes": sum(1 for n in notes if n[0] < clip_q),
                })
                jobs.append({"midi": str(midi_path.relative_to(out)), "wav": f"{style}/{wav_rel}",
                             "seconds": args.clip_seconds, "peak": args.peak})
            stats["clips"] = len(clips)
            if want is not None and len(clips) < want:
                print(f"  {style}: only {len(clips)} of {want} asked tunes are at least "
                      f"{args.clip_seconds} s long")
            side = split_by_work(clips, fractions, args.seed)
            splits = {s: [c for c in clips if side[c["work"]] == s] for s in ("train", "val", "test")}
            (out / style).mkdir(parents=True, exist_ok=True)
            for split, rows in splits.items():
                with open(out / style / f"{split}.jsonl", "w", encoding="utf-8") as f:
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
            stats["splits"] = {s: len(r) for s, r in splits.items()}
            stats["works"] = len(side)
            stats["seconds"] = round(time.time() - t0, 1)
            summary[style] = {"files": coll.files, **stats, "programs": coll.programs}
            clips_of[style] = clips
            print(f"  {style}: parsed {stats['parsed']} tunes ({stats['failed']} failed, "
                  f"{stats['too_short']} shorter than {args.clip_seconds} s) -> {len(clips)} clips of "
                  f"{len(side)} works; train/val/test {stats['splits']['train']}/{stats['splits']['val']}/"
                  f"{stats['splits']['test']} ({stats['seconds']} s)")
            for e in errors[:3]:
                print(f"    failed {e}")

    with open(out / "render_jobs.jsonl", "w", encoding="utf-8") as f:
        for job in jobs:
            f.write(json.dumps(job) + "\n")
    dataset = {
        "name": "folk-songs",
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "clip_seconds": args.clip_seconds,
        "styles": styles,
        "source": f"music21-{music21.__version__} essenFolksong + {args.soundfont_name} (rustysynth)",
        "licence": LICENCE,
        "soundfont": args.soundfont_name,
        "collections": summary,
        "settings": {"bpm": args.bpm, "tempo_jitter": args.tempo_jitter, "split": list(fractions),
                     "seed": args.seed, "peak": args.peak, "velocity": VELOCITY,
                     "instruments": {str(p): n for p, n in INSTRUMENTS.items()}},
        "generator": "ci/folk_songs.py",
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(jobs)} MIDI files, {out / 'render_jobs.jsonl'} and the folder format in "
          f"{out} ({time.time() - started:.1f} s)")


if __name__ == "__main__":
    main()
