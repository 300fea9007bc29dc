#!/usr/bin/env python3
"""Builds data/corpus/ (the default SAE training corpus) from Universal Dependencies treebanks.

Usage: make_corpus.py [--out data/corpus] [--cap-bytes 300000] [--train-bio GITDIR COMMIT PATH] TREEBANK...

Each TREEBANK is a clone of a UD repository (a bare git dir, read at HEAD, or a checkout),
named UD_<Language>-<Name>. The rule, also stated in data/corpus/README.md:

- Sentences are the `# text = ...` comment lines of the .conllu files, in file order.
- Documents: consecutive sentences sharing a `# newdoc id`. A treebank with no newdoc markers,
  or whose every document is a single sentence (Japanese GSD's one id per sentence), is grouped
  into pseudo-documents of 10 consecutive sentences instead.
- Sentences are joined with one space (none for Japanese and Chinese); tabs and line breaks
  inside a sentence become spaces. One document per line, UTF-8.
- Split: a treebank's train file goes to training text and its test file to held-out text. Its
  dev file goes to training text when the train file is missing from the clone (the snapshots
  this corpus was built from lack the large train files), else to held-out text. A test-only
  treebank (PUD) sends every fifth document (index % 5 == 4, in file order) to held-out and the
  rest to training; PUD is parallel, so held-out documents are the same in every language.
- --train-bio GITDIR COMMIT PATH adds a train split kept elsewhere in a treebank's history as
  token-per-line BIO (Japanese GSD's train file is missing from the snapshot, but its sentences
  survive in `stanza/train.bio` at commit fad3ce6, 2022): a sentence is its tokens concatenated
  (no-space languages only), grouped into pseudo-documents of 10, going to training text after
  the dev file; a sentence also found in held-out text (spaces ignored) is dropped.
- A held-out document identical to a training document is dropped from held-out.
- Each language's training and held-out text are capped at --cap-bytes each, by whole
  documents in order.
"""

import argparse
import os
import re
import subprocess
import sys

LANGS = {
    "English": "en",
    "French": "fr",
    "German": "de",
    "Spanish": "es",
    "Japanese": "ja",
    "Chinese": "zh",
    "Arabic": "ar",
}
NO_SPACE = {"ja", "zh"}
PSEUDO_DOC = 10
TEXT = re.compile(r"^# text\s*=\s?(.*)$")
NEWDOC = re.compile(r"^# newdoc(?:\s+id\s*=\s*(.*))?$")


def treebank_name(path):
    """UD_<Language>-<Name> from a path such as /x/UniversalDependencies+UD_English-EWT/repo."""
    m = re.search(r"UD_([A-Za-z]+)-([A-Za-z]+)", os.path.abspath(path))
    if not m:
        sys.exit(f"{path}: cannot tell the treebank (expected UD_<Language>-<Name> in the path)")
    return m.group(1), m.group(2)


def list_files(path):
    """The .conllu files at the root, as {name: reader}."""
    if os.path.isdir(os.path.join(path, "objects")):
        names = subprocess.run(
            ["git", "--git-dir", path, "ls-tree", "--name-only", "HEAD"],
            check=True, capture_output=True, text=True,
        ).stdout.split()

        def reader(name):
            r = subprocess.run(["git", "--git-dir", path, "show", f"HEAD:{name}"],
                               capture_output=True)
            return r.stdout.decode("utf-8") if r.returncode == 0 else None

    else:
        names = sorted(os.listdir(path))

        def reader(name):
            with open(os.path.join(path, name), encoding="utf-8") as f:
                return f.read()

    return {n: reader for n in names if n.endswith(".conllu")}


def commit(path):
    if not os.path.isdir(os.path.join(path, "objects")):
        return "checkout"
    return subprocess.run(["git", "--git-dir", path, "rev-parse", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()


def documents(text):
    """[[sentence, ...], ...] by newdoc id, or pseudo-documents where there is no structure."""
    docs, cur_id, cur = [], None, []
    for line in text.splitlines():
        m = NEWDOC.match(line)
        if m:
            new_id = (m.group(1) or "").strip() or object()
            if new_id != cur_id and cur:
                docs.append(cur)
                cur = []
            cur_id = new_id
            continue
        m = TEXT.match(line)
        if m:
            s = " ".join(m.group(1).replace("\t", " ").split())
            if s:
                cur.append(s)
    if cur:
        docs.append(cur)
    if len(docs) <= 1 or all(len(d) == 1 for d in docs):
        flat = [s for d in docs for s in d]
        docs = [flat[i:i + PSEUDO_DOC] for i in range(0, len(flat), PSEUDO_DOC)]
    return docs


def split_of(name, has_train):
    if "-train" in name:
        return "train"
    if "-test" in name:
        return "heldout"
    if "-dev" in name:
        return "heldout" if has_train else "train"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/corpus")
    ap.add_argument("--cap-bytes", type=int, default=300_000)
    ap.add_argument("--train-bio", nargs=3, action="append", default=[],
                    metavar=("GITDIR", "COMMIT", "PATH"))
    ap.add_argument("treebanks", nargs="+")
    args = ap.parse_args()

    out = {}  # lang -> {"train": [...], "heldout": [...]}
    held_sents = {}  # lang -> sentences (spaces removed) of files feeding held-out text
    sources = []
    for path in args.treebanks:
        language, name = treebank_name(path)
        lang = LANGS.get(language)
        if lang is None:
            sys.exit(f"{path}: no language code for {language}; add it to LANGS")
        sep = "" if lang in NO_SPACE else " "
        files = list_files(path)
        texts = {n: r(n) for n, r in files.items()}
        missing = sorted(n for n, t in texts.items() if t is None)
        texts = {n: t for n, t in texts.items() if t is not None}
        has_train = any("-train" in n for n in texts)
        test_only = all("-test" in n for n in texts)
        used = []
        for n in sorted(texts):
            sent_docs = documents(texts[n])
            docs = [sep.join(d) for d in sent_docs]
            if split_of(n, has_train) == "heldout" or test_only:
                # Every sentence of a file that feeds held-out text, so that --train-bio
                # cannot leak one of them into training.
                held_sents.setdefault(lang, set()).update(
                    "".join(x.split()) for d in sent_docs for x in d)
            if test_only:
                parts = {"train": [d for i, d in enumerate(docs) if i % 5 != 4],
                         "heldout": [d for i, d in enumerate(docs) if i % 5 == 4]}
            else:
                parts = {split_of(n, has_train): docs}
            for split, ds in parts.items():
                if split is None:
                    continue
                out.setdefault(lang, {"train": [], "heldout": []})[split].extend(ds)
                used.append(f"{n} -> {split} ({len(ds)} docs)")
        sources.append((lang, f"UD_{language}-{name}", commit(path), used, missing))

    for gitdir, rev, bio in args.train_bio:
        language, name = treebank_name(gitdir)
        lang = LANGS[language]
        if lang not in NO_SPACE:
            sys.exit(f"--train-bio {gitdir}: tokens cannot be rejoined without spaces for {lang}")
        text = subprocess.run(["git", "--git-dir", gitdir, "show", f"{rev}:{bio}"],
                              check=True, capture_output=True).stdout.decode("utf-8")
        held = {"".join(d.split()) for d in out[lang]["heldout"]}
        sents, cur = [], []
        for line in text.splitlines() + [""]:
            if line.strip():
                cur.append(line.split("\t")[0])
            elif cur:
                sents.append("".join(cur))
                cur = []
        kept = [s for s in sents if "".join(s.split()) not in held_sents.get(lang, set())]
        docs = ["".join(kept[i:i + PSEUDO_DOC]) for i in range(0, len(kept), PSEUDO_DOC)]
        docs = [d for d in docs if d not in held]
        out[lang]["train"].extend(docs)
        sources.append((lang, f"UD_{language}-{name}", rev,
                        [f"{bio} -> train ({len(docs)} docs, {len(sents) - len(kept)} sentences"
                         " dropped as held-out)"], []))

    os.makedirs(args.out, exist_ok=True)
    for lang, parts in sorted(out.items()):
        train_set = set(parts["train"])
        before = len(parts["heldout"])
        parts["heldout"] = [d for d in parts["heldout"] if d not in train_set]
        if before != len(parts["heldout"]):
            print(f"{lang}: {before - len(parts['heldout'])} held-out documents also in training,"
                  " dropped")
        for split in ("train", "heldout"):
            kept, size = [], 0
            for d in parts[split]:
                b = len(d.encode("utf-8")) + 1
                if size + b > args.cap_bytes:
                    break
                kept.append(d)
                size += b
            with open(os.path.join(args.out, f"{lang}.{split}.txt"), "w", encoding="utf-8",
                      newline="\n") as f:
                f.writelines(d + "\n" for d in kept)
            print(f"{lang}.{split}.txt: {len(kept)} docs, {size} bytes"
                  f" ({len(parts[split]) - len(kept)} docs over the cap)")
    for lang, tb, c, used, missing in sources:
        print(f"{lang} {tb} @ {c}")
        for u in used:
            print(f"    {u}")
        for m in missing:
            print(f"    {m}: missing from the clone, skipped")


if __name__ == "__main__":
    main()
