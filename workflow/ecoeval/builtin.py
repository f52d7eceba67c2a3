"""The built-in data: a generated pretraining corpus, classification set and bias probe set.

Everything is generated offline and deterministically from the config's seed, from word lists
and templates written for this project (`resources/builtin/`):

- `corpus`: documents about one person each (a gendered first name and pronouns, an
  occupation, its workplace, places, days, actions). `stereotype_rate` is the fraction of each
  occupation's documents whose person has the occupation's stereotyped gender
  (`occupations.tsv`); 0.5 means no association. Half the occupations are female- and half
  male-stereotyped, so pronouns and names stay balanced overall at every rate.
- `classify`: review-like sentences with a binary sentiment label and the reviewer's gender
  (`group`) visible through a name and pronouns. In the train split P(label=1 | female) is
  `label_skew` and P(label=1 | male) is 1 - `label_skew`; the test split is balanced. A fraction
  `neutral_fraction` of the sentences carries no sentiment word, so the label of those can
  only be guessed, and a classifier trained on skewed data learns to guess from the group.
- `probe`: minimal pairs in the CrowS-Pairs format from templates held out of the corpus.
  `sent_more` puts an occupation with its stereotyped gender, `sent_less` is the same sentence
  with only the gender words (name, pronouns) swapped. Half the pairs are about
  female-stereotyped occupations and half about male-stereotyped ones, so a model's overall
  preference for one gender's words cancels and an unbiased model scores about 50.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ecoeval import EcoevalError

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
BUILTIN_DIR = RESOURCES / "builtin"
# bump when the generator's output for a given config changes
GENERATOR_VERSION = 1

GENDERS = ("female", "male")
PRONOUNS = {
    "female": {"subj": "she", "obj": "her", "poss": "her"},
    "male": {"subj": "he", "obj": "him", "poss": "his"},
}
GENDER_SLOTS = ("name", "subj", "obj", "poss")
_SLOT = re.compile(r"\{([A-Za-z_]+)\}")


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a tab-separated resource file: `#` lines are comments, the first other line the header."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise EcoevalError(f"{path}: expected a header line and rows, found none")
    header = lines[0].split("\t")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise EcoevalError(f"{path}: row {n} has {len(cells)} fields, expected {len(header)} ({', '.join(header)})")
        rows.append(dict(zip(header, cells)))
    return rows


def read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


@dataclass(frozen=True)
class Lexicon:
    occupations: tuple[tuple[str, str, str], ...]  # (occupation, stereotyped gender, workplace)
    names: tuple[tuple[str, str], ...]  # (female, male) pairs
    slots: dict[str, tuple[str, ...]]  # filler slot -> values (words.tsv and sentiment.tsv)
    corpus_templates: tuple[str, ...]
    probe_templates: tuple[str, ...]
    classify_templates: tuple[tuple[str, str], ...]  # (kind, template)

    def names_of(self, gender: str) -> tuple[str, ...]:
        return tuple(pair[GENDERS.index(gender)] for pair in self.names)


RESOURCE_FILES = (
    "occupations.tsv",
    "names.tsv",
    "words.tsv",
    "sentiment.tsv",
    "corpus_templates.txt",
    "probe_templates.txt",
    "classify_templates.tsv",
)


@functools.lru_cache(maxsize=4)
def load_lexicon(folder: Path = BUILTIN_DIR) -> Lexicon:
    occupations = tuple((r["occupation"], r["stereotype"], r["workplace"]) for r in read_tsv(folder / "occupations.tsv"))
    bad = [o for o, g, _ in occupations if g not in GENDERS]
    if bad:
        raise EcoevalError(f"{folder / 'occupations.tsv'}: stereotype must be female or male (rows {bad})")
    slots: dict[str, list[str]] = {}
    for fname in ("words.tsv", "sentiment.tsv"):
        for r in read_tsv(folder / fname):
            slots.setdefault(r["slot"], []).append(r["value"])
    return Lexicon(
        occupations=occupations,
        names=tuple((r["female"], r["male"]) for r in read_tsv(folder / "names.tsv")),
        slots={k: tuple(v) for k, v in slots.items()},
        corpus_templates=tuple(read_lines(folder / "corpus_templates.txt")),
        probe_templates=tuple(read_lines(folder / "probe_templates.txt")),
        classify_templates=tuple((r["kind"], r["template"]) for r in read_tsv(folder / "classify_templates.tsv")),
    )


def slots_of(template: str) -> list[str]:
    """The slot names of a template, lower-cased, in order of first appearance."""
    return list(dict.fromkeys(m.lower() for m in _SLOT.findall(template)))


def render(template: str, values: dict[str, str]) -> str:
    """Fill `{slot}` from values; `{Slot}` capitalises the value's first letter."""

    def sub(m: re.Match) -> str:
        slot = m.group(1)
        value = values[slot.lower()]
        return value[:1].upper() + value[1:] if slot[0].isupper() else value

    return _SLOT.sub(sub, template)


def person(gender: str, name: str) -> dict[str, str]:
    return {"name": name, **PRONOUNS[gender]}


def draw_fillers(template: str, lex: Lexicon, rng: random.Random, fixed: dict[str, str]) -> dict[str, str]:
    """Values for a template's slots: `fixed` ones as given, the others drawn from the word lists."""
    values = dict(fixed)
    for slot in slots_of(template):
        if slot in values or slot in GENDER_SLOTS:
            continue
        if slot not in lex.slots:
            raise EcoevalError(f"template {template!r}: slot {{{slot}}} has no word list in resources/builtin")
        values[slot] = rng.choice(lex.slots[slot])
    return values


def _stereotyped_counts(counts: list[int], rate: float) -> list[int]:
    """How many of each occupation's documents get the stereotyped gender.

    Error diffusion over the occupations keeps the overall share at `rate` exactly (up to one
    document) without rounding every occupation the same way.
    """
    out, owed = [], 0.0
    for c in counts:
        want = rate * c + owed
        k = min(c, max(0, int(want + 0.5)))
        owed = want - k
        out.append(k)
    return out


def generate_corpus(cfg: dict, seed: int, lex: Lexicon | None = None) -> list[dict]:
    """Pretraining documents: rows `id`, `text`, `split` (train/validation), plus `occupation`, `gender`."""
    lex = lex or load_lexicon()
    rng = random.Random(f"ecoeval-builtin-corpus-{seed}")
    n_docs, n_sent = cfg["n_documents"], cfg["sentences_per_document"]
    occs = lex.occupations
    per_occ = [n_docs // len(occs) + (1 if i < n_docs % len(occs) else 0) for i in range(len(occs))]
    plan = []
    for (occ, stereo, workplace), n, k in zip(occs, per_occ, _stereotyped_counts(per_occ, cfg["stereotype_rate"])):
        anti = GENDERS[1 - GENDERS.index(stereo)]
        plan += [(occ, workplace, stereo)] * k + [(occ, workplace, anti)] * (n - k)
    rng.shuffle(plan)
    docs = []
    for i, (occ, workplace, gender) in enumerate(plan):
        who = person(gender, rng.choice(lex.names_of(gender)))
        if n_sent <= len(lex.corpus_templates):
            templates = rng.sample(lex.corpus_templates, n_sent)
        else:
            templates = [rng.choice(lex.corpus_templates) for _ in range(n_sent)]
        fixed = {**who, "occ": occ, "workplace": workplace}
        text = " ".join(render(t, draw_fillers(t, lex, rng, fixed)) for t in templates)
        docs.append({"id": f"builtin-{i:06d}", "text": text, "split": "train", "occupation": occ, "gender": gender})
    n_val = min(len(docs) - 1, max(1, round(cfg["validation_fraction"] * len(docs))))
    for j in rng.sample(range(len(docs)), n_val):
        docs[j]["split"] = "validation"
    return docs


def _classify_split(split: str, n: int, p_female: float, cfg: dict, lex: Lexicon, rng: random.Random) -> list[dict]:
    cue = [t for kind, t in lex.classify_templates if kind == "cue"]
    neutral = [t for kind, t in lex.classify_templates if kind == "neutral"]
    rows = []
    for g, (gender, size) in enumerate(zip(GENDERS, (n // 2, n - n // 2))):
        p1 = p_female if gender == "female" else 1.0 - p_female
        n1 = round(p1 * size)
        labels = [1] * n1 + [0] * (size - n1)
        rng.shuffle(labels)
        neutral_idx = set(rng.sample(range(size), round(cfg["neutral_fraction"] * size)))
        for i, label in enumerate(labels):
            template = rng.choice(neutral if i in neutral_idx else cue)
            fixed = {**person(gender, rng.choice(lex.names_of(gender))), "sentiment": rng.choice(lex.slots["positive" if label else "negative"])}
            rows.append({"text": render(template, draw_fillers(template, lex, rng, fixed)), "label": label, "group": gender})
    rng.shuffle(rows)
    return [{"id": f"builtin-{split}-{i:06d}", "split": split, **r} for i, r in enumerate(rows)]


def generate_classify(cfg: dict, seed: int, lex: Lexicon | None = None) -> list[dict]:
    """Labelled sentences: rows `id`, `text`, `split` (train/test), `label` (0/1), `group` (female/male)."""
    lex = lex or load_lexicon()
    rng = random.Random(f"ecoeval-builtin-classify-{seed}")
    return _classify_split("train", cfg["n_classify_train"], cfg["label_skew"], cfg, lex, rng) + _classify_split(
        "test", cfg["n_classify_test"], 0.5, cfg, lex, rng
    )


def generate_probe(cfg: dict, seed: int, lex: Lexicon | None = None) -> list[dict]:
    """CrowS-Pairs-style minimal pairs: `id`, `sent_more`, `sent_less`, `stereo_antistereo`, `bias_type`.

    Every row is `stereo`: `sent_more` has the occupation's stereotyped gender. Occupations
    alternate between female- and male-stereotyped ones; pairs are unique.
    """
    lex = lex or load_lexicon()
    rng = random.Random(f"ecoeval-builtin-probe-{seed}")
    n_pairs = cfg["n_probe_pairs"]
    by_gender = {g: [o for o in lex.occupations if o[1] == g] for g in GENDERS}
    rows, seen = [], set()
    attempts = 0
    while len(rows) < n_pairs:
        attempts += 1
        if attempts > 100 * n_pairs:
            raise EcoevalError(f"config key data.builtin.n_probe_pairs: at most {len(rows)} distinct pairs can be built from resources/builtin, got {n_pairs}")
        occ, stereo, workplace = rng.choice(by_gender[GENDERS[len(rows) % 2]])
        template = rng.choice(lex.probe_templates)
        pair = rng.randrange(len(lex.names))
        fillers = draw_fillers(template, lex, rng, {"occ": occ, "workplace": workplace})
        anti = GENDERS[1 - GENDERS.index(stereo)]
        more = render(template, {**fillers, **person(stereo, lex.names[pair][GENDERS.index(stereo)])})
        less = render(template, {**fillers, **person(anti, lex.names[pair][GENDERS.index(anti)])})
        if more in seen:
            continue
        seen.add(more)
        rows.append({"id": f"builtin-probe-{len(rows):05d}", "sent_more": more, "sent_less": less, "stereo_antistereo": "stereo", "bias_type": "gender"})
    return rows


def resource_files() -> list[Path]:
    return [BUILTIN_DIR / f for f in RESOURCE_FILES]
