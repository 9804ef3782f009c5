"""A 4-class topic task from the shared evaluation data, for `edgesdk export --train-data ... --qat` (issue #17).

Classes: three STS-B genres (news, captions, forum: sentence1 and sentence2 of stsb/dev.tsv as separate rows) and
"movie-review" (SST-2 training sentences). Texts are deduplicated (a text found under two classes is dropped),
the large classes are capped so the task is roughly balanced (the forum genre has only ~190 distinct sentences:
it stays the small class), each class is split into eval and train rows (disjoint, by text), and both files are
shuffled with the seed. Writes `train.tsv` and `eval.tsv` (header `text<TAB>label`) under --out.

    python scripts/make_topics_task.py --data ../shared/data --out /tmp/qat

The data is not part of the project (see ../shared/data/README.md); any files of the same format work:
--stsb FILE (GLUE STS-B columns: genre, sentence1, sentence2) and --sst2 FILE (header sentence<TAB>label).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections import Counter
from pathlib import Path

GENRES = {"main-news": "news", "main-captions": "captions", "main-forum": "forum"}
MOVIE = "movie-review"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_tsv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        fail(f"'{path}' does not exist. Pass --data DIR (the folder holding stsb/ and sst2/, by default "
             f"../shared/data beside the project) or the file itself (--stsb / --sst2).")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            fail(f"'{path}' has no column '{missing[0]}' (header: {', '.join(reader.fieldnames or ())}); "
                 f"expected a TSV with the columns {', '.join(columns)}.")
        return list(reader)


def clean(text: str) -> str:
    return " ".join((text or "").split())


def build(stsb: Path, sst2: Path, per_class: int, eval_per_class: int, min_words: int,
          seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    by_class: dict[str, list[str]] = {label: [] for label in (*GENRES.values(), MOVIE)}
    for row in read_tsv(stsb, ("genre", "sentence1", "sentence2")):
        label = GENRES.get(row["genre"].strip())
        if label:
            by_class[label] += [clean(row["sentence1"]), clean(row["sentence2"])]
    # SST-2 train holds phrases as well as sentences: keep texts of min_words words or more
    by_class[MOVIE] = [t for t in (clean(r["sentence"]) for r in read_tsv(sst2, ("sentence", "label")))
                       if len(t.split()) >= min_words]
    seen: dict[str, set[str]] = {}
    for label, texts in by_class.items():
        for t in texts:
            if t:
                seen.setdefault(t.lower(), set()).add(label)
    rng = random.Random(seed)
    train, evaluation = [], []
    for label, texts in by_class.items():
        unique = sorted({t for t in texts if t and seen[t.lower()] == {label}}, key=str.lower)
        unique = list({t.lower(): t for t in unique}.values())  # case-only duplicates count once
        if len(unique) < 20:
            fail(f"class '{label}' has only {len(unique)} distinct texts; is '{stsb if label != MOVIE else sst2}' "
                 "the full file?")
        rng.shuffle(unique)
        unique = unique[:per_class]
        n_eval = min(eval_per_class, max(len(unique) // 5, 1))  # a small class gives at most a fifth to eval
        evaluation += [(t, label) for t in unique[:n_eval]]
        train += [(t, label) for t in unique[n_eval:]]
    rng.shuffle(train)
    rng.shuffle(evaluation)
    return train, evaluation


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
                   help="folder holding stsb/dev.tsv and sst2/train.tsv (default: ../shared/data)")
    p.add_argument("--stsb", help="STS-B TSV (default DATA/stsb/dev.tsv)")
    p.add_argument("--sst2", help="SST-2 TSV (default DATA/sst2/train.tsv)")
    p.add_argument("--out", default="/tmp/qat", help="folder for train.tsv and eval.tsv (default /tmp/qat)")
    p.add_argument("--per-class", type=int, default=1200, help="cap on distinct texts per class (default 1200)")
    p.add_argument("--eval-per-class", type=int, default=120, help="eval rows per class (default 120; a small "
                   "class gives at most a fifth of its texts)")
    p.add_argument("--min-words", type=int, default=6, help="SST-2 texts shorter than this are phrases, "
                   "skipped (default 6)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = Path(args.data)
    train, evaluation = build(Path(args.stsb or data / "stsb" / "dev.tsv"),
                              Path(args.sst2 or data / "sst2" / "train.tsv"),
                              args.per_class, args.eval_per_class, args.min_words, args.seed)
    assert not {t.lower() for t, _ in train} & {t.lower() for t, _ in evaluation}
    out = Path(args.out)
    write(out / "train.tsv", train)
    write(out / "eval.tsv", evaluation)
    for name, rows in (("train", train), ("eval", evaluation)):
        counts = Counter(label for _, label in rows)
        print(f"{out / (name + '.tsv')}: {len(rows)} rows ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
