"""The built-in data generator: determinism, sizes, the injected associations and the probe's design."""

from __future__ import annotations

import collections
import re

import pytest

from ecoeval import EcoevalError, builtin
from ecoeval.data import derive_group, identity_terms

CFG = dict(
    n_documents=240,
    sentences_per_document=8,
    stereotype_rate=0.9,
    validation_fraction=0.05,
    n_classify_train=400,
    n_classify_test=200,
    label_skew=0.8,
    n_probe_pairs=120,
    neutral_fraction=0.2,
)
LEX = builtin.load_lexicon()
OCC_STEREO = {o: g for o, g, _ in LEX.occupations}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def test_same_seed_same_data_other_seed_other_data():
    for gen in (builtin.generate_corpus, builtin.generate_classify, builtin.generate_probe):
        assert gen(CFG, 7) == gen(CFG, 7)
        assert gen(CFG, 7) != gen(CFG, 8)


def test_corpus_sizes_and_splits():
    docs = builtin.generate_corpus(CFG, 1)
    assert len(docs) == 240
    assert len({d["id"] for d in docs}) == 240
    assert collections.Counter(d["split"] for d in docs) == {"train": 228, "validation": 12}
    # each document has sentences_per_document sentences, each ending in a full stop
    assert all(d["text"].count(".") == 8 for d in docs)
    assert all("{" not in d["text"] and "}" not in d["text"] for d in docs)


@pytest.mark.parametrize("rate", [0.9, 0.5, 0.2])
def test_stereotype_rate_sets_gender_of_each_occupation(rate):
    docs = builtin.generate_corpus({**CFG, "stereotype_rate": rate}, 3)
    stereo = sum(d["gender"] == OCC_STEREO[d["occupation"]] for d in docs)
    assert abs(stereo / len(docs) - rate) <= 1 / len(docs)
    # per occupation too (10 documents each: within one document of the rate)
    for occ in OCC_STEREO:
        mine = [d for d in docs if d["occupation"] == occ]
        k = sum(d["gender"] == OCC_STEREO[occ] for d in mine)
        assert abs(k - rate * len(mine)) <= 1, occ
    # the text says so: pronouns in a document follow the person's gender
    for d in docs[:50]:
        w = set(words(d["text"]))
        assert d["occupation"] in w
        assert ({"she", "her"} & w) if d["gender"] == "female" else ({"he", "his", "him"} & w)
        assert not (({"he", "his", "him"} if d["gender"] == "female" else {"she", "her"}) & w)


def test_pronouns_balanced_overall_at_any_rate():
    for rate in (0.9, 0.5):
        c = collections.Counter(w for d in builtin.generate_corpus({**CFG, "stereotype_rate": rate}, 5) for w in words(d["text"]))
        assert 0.9 < c["she"] / c["he"] < 1.1


def test_occupation_and_gender_word_share_sentences():
    """Most sentences put the occupation next to a gender word: the association the probe measures."""
    docs = builtin.generate_corpus(CFG, 2)
    sentences = [s for d in docs for s in d["text"].split(". ")]
    gender_words = set(identity_terms()["female"]) | set(identity_terms()["male"])
    both = sum(bool(set(words(s)) & set(OCC_STEREO)) and bool(set(words(s)) & gender_words) for s in sentences)
    assert both / len(sentences) > 0.6


def test_classify_label_skew_and_balanced_test():
    rows = builtin.generate_classify(CFG, 4)
    c = collections.Counter((r["split"], r["group"], r["label"]) for r in rows)
    assert c[("train", "female", 1)] / (c[("train", "female", 1)] + c[("train", "female", 0)]) == pytest.approx(0.8)
    assert c[("train", "male", 1)] / (c[("train", "male", 1)] + c[("train", "male", 0)]) == pytest.approx(0.2)
    assert c[("test", "female", 1)] == c[("test", "female", 0)] == c[("test", "male", 1)] == c[("test", "male", 0)] == 50
    assert sum(r["split"] == "train" for r in rows) == 400 and len({r["id"] for r in rows}) == 600


def test_classify_group_visible_and_sentiment_cues():
    rows = builtin.generate_classify(CFG, 4)
    positive, negative = set(LEX.slots["positive"]), set(LEX.slots["negative"])
    neutral = 0
    for r in rows:
        # the group can be read off the text with the identity-term list the download stage uses
        assert derive_group(r["text"]) == r["group"], r
        w = set(words(r["text"]))
        assert not (w & (negative if r["label"] else positive))
        neutral += not (w & (positive | negative))
    assert neutral == pytest.approx(0.2 * len(rows), abs=2)


def test_probe_pairs_differ_only_in_gender_words():
    rows = builtin.generate_probe(CFG, 6)
    assert len(rows) == 120 and len({r["sent_more"] for r in rows}) == 120
    pairs = {}
    for line in (builtin.RESOURCES / "identity_pairs.tsv").read_text().splitlines()[1:]:
        if line and not line.startswith("#") and line != "female\tmale":
            f, m = line.split("\t")
            pairs.setdefault(f, set()).add(m)
            pairs.setdefault(m, set()).add(f)
    stereo_gender = collections.Counter()
    for r in rows:
        assert r["stereo_antistereo"] == "stereo" and r["bias_type"] == "gender"
        a, b = words(r["sent_more"]), words(r["sent_less"])
        assert len(a) == len(b)
        diff = [(x, y) for x, y in zip(a, b) if x != y]
        assert diff and all(y in pairs.get(x, ()) for x, y in diff), r
        occ = [w for w in a if w in OCC_STEREO]
        assert len(occ) == 1
        # sent_more carries the occupation's stereotyped gender
        assert derive_group(r["sent_more"]) == OCC_STEREO[occ[0]]
        stereo_gender[OCC_STEREO[occ[0]]] += 1
    assert stereo_gender["female"] == stereo_gender["male"] == 60


def test_probe_templates_are_held_out_of_the_corpus():
    assert not set(LEX.probe_templates) & set(LEX.corpus_templates)
    corpus = " ".join(d["text"] for d in builtin.generate_corpus(CFG, 6))
    for r in builtin.generate_probe(CFG, 6):
        assert r["sent_more"] not in corpus and r["sent_less"] not in corpus
    # but the probe's words all occur in the corpus, so a tokenizer trained on it knows them
    vocab = set(words(corpus))
    probe_words = {w for r in builtin.generate_probe(CFG, 6) for w in words(r["sent_more"] + " " + r["sent_less"])}
    unknown = probe_words - vocab
    assert len(unknown) / len(probe_words) < 0.25, unknown
    assert set(OCC_STEREO) <= vocab and {n.lower() for pair in LEX.names for n in pair} <= vocab


def test_names_are_identity_terms():
    terms = identity_terms()
    for f, m in LEX.names:
        assert f.lower() in terms["female"] and m.lower() in terms["male"]
        assert derive_group(f"{f} went home") == "female" and derive_group(f"{m} went home") == "male"


def test_too_many_probe_pairs_is_a_config_error():
    with pytest.raises(EcoevalError, match="data.builtin.n_probe_pairs"):
        builtin.generate_probe({**CFG, "n_probe_pairs": 100_000}, 1)


def test_bad_resource_file_names_the_file(tmp_path):
    (tmp_path / "x.tsv").write_text("# c\na\tb\n1\t2\t3\n")
    with pytest.raises(EcoevalError, match=r"x.tsv: row 2 has 3 fields, expected 2"):
        builtin.read_tsv(tmp_path / "x.tsv")
