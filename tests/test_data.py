"""The download stage: every source and format, determinism, provenance, and bad input."""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecoeval import EcoevalError, data
from ecoeval.config import load_schema, validate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SMALL_BUILTIN = {"n_documents": 40, "n_classify_train": 40, "n_classify_test": 20, "n_probe_pairs": 20}


def config(**data_overrides) -> dict:
    """A validated config whose data section is the builtin default, small, with overrides."""
    cfg = validate({"data": {"builtin": SMALL_BUILTIN, **data_overrides}})
    return cfg


def params(tmp_path: Path, cfg: dict | None = None, **data_overrides) -> dict:
    cfg = cfg or config(**data_overrides)
    return {"seed": cfg["seed"], "data": cfg["data"], "experiment": "t", "work_dir": str(tmp_path / "work"), "threads": 1}


def outputs(folder: Path) -> dict[str, Path]:
    out = {k: folder / "data" / f"{k}.parquet" for k in data.KINDS}
    out["provenance"] = folder / "data" / "provenance.json"
    return out


def run(tmp_path: Path, p: dict, name: str = "out") -> dict[str, Path]:
    out = outputs(tmp_path / name)
    data.run(p, {}, out, None)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- builtin


def test_builtin_outputs_follow_the_contract(tmp_path):
    out = run(tmp_path, params(tmp_path))
    pre = pq.read_table(out["pretrain"])
    assert pre.schema.names == ["id", "text", "split"] and pre.num_rows == 40
    assert set(pre.column("split").to_pylist()) == {"train", "validation"}
    cls = pq.read_table(out["classify"])
    assert cls.schema == pa.schema([("id", pa.string()), ("text", pa.string()), ("split", pa.string()), ("label", pa.int64()), ("group", pa.string())])
    assert set(cls.column("group").to_pylist()) == {"female", "male"} and set(cls.column("label").to_pylist()) == {0, 1}
    probe = pq.read_table(out["probe"])
    assert probe.schema.names == ["id", "sent_more", "sent_less", "stereo_antistereo", "bias_type"] and probe.num_rows == 20
    prov = json.loads(out["provenance"].read_text())
    assert prov["pretrain"]["rows"] == {"train": 38, "validation": 2}
    assert prov["classify"]["rows"] == {"test": 20, "train": 40} and prov["probe"]["rows"] == {"all": 20}
    gen = prov["pretrain"]["generator"]
    assert gen["seed"] == 1234 and gen["stereotype_rate"] == 0.9 and gen["n_documents"] == 40
    assert all(len(f["sha256"]) == 64 and (ROOT / f["location"]).is_file() for f in prov["probe"]["files"])
    assert not list((tmp_path / "out" / "data").glob(".*tmp*"))


def test_same_config_gives_byte_identical_parquet(tmp_path):
    a = run(tmp_path, params(tmp_path), "a")
    b = run(tmp_path, params(tmp_path), "b")
    for kind in (*data.KINDS, "provenance"):
        assert a[kind].read_bytes() == b[kind].read_bytes(), kind
    c = run(tmp_path, params(tmp_path, cfg=validate({"seed": 9, "data": {"builtin": SMALL_BUILTIN}})), "c")
    assert a["pretrain"].read_bytes() != c["pretrain"].read_bytes()


def test_stereotype_rate_reaches_the_corpus(tmp_path):
    lo = run(tmp_path, params(tmp_path, builtin={**SMALL_BUILTIN, "stereotype_rate": 0.5}), "lo")
    hi = run(tmp_path, params(tmp_path), "hi")
    assert pq.read_table(lo["pretrain"]) != pq.read_table(hi["pretrain"])
    assert pq.read_table(lo["probe"]) == pq.read_table(hi["probe"])  # the probe does not depend on the rate


# ----------------------------------------------------------------------------- local files


def local(kind: str, splits: dict, **extra) -> dict:
    return {kind: {"source": "local", "splits": {k: str(v) for k, v in splits.items()}, **extra}}


def test_txt_paragraphs_and_wikitext_headings(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text(" \n = Title = \n \n First paragraph line one .\n line two .\n \n = = Section = = \n\n Second paragraph .\n\n\n Third .\n")
    tables, prov = data.prepare(params(tmp_path, **local("pretrain", {"train": f}, holdout_fraction=0.34)))
    t = tables["pretrain"].to_pylist()
    assert [r["text"] for r in t] == ["First paragraph line one .\nline two .", "Second paragraph .", "Third ."]
    assert [r["id"] for r in t] == ["train-4", "train-9", "train-12"]
    # one split given: a seeded validation split is carved from train
    assert sorted(r["split"] for r in t) == ["train", "train", "validation"]
    assert prov["pretrain"]["holdout"] == {"split": "validation", "from": "train", "fraction": 0.34, "seed": 1234}
    assert prov["pretrain"]["files"][0]["sha256"] == sha(f)
    again, _ = data.prepare(params(tmp_path, **local("pretrain", {"train": f}, holdout_fraction=0.34)))
    assert again["pretrain"] == tables["pretrain"]


def test_csv_tsv_jsonl_parquet_with_column_mapping(tmp_path):
    rows = [("she loved it", 1, "f"), ("he hated it", 0, "m"), ("fine", 1, "f")]
    (tmp_path / "c.csv").write_text("review,y,who\n" + "".join(f'"{t}",{y},{g}\n' for t, y, g in rows))
    (tmp_path / "c.tsv").write_text("review\ty\twho\n" + "".join(f"{t}\t{y}\t{g}\n" for t, y, g in rows))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"review": t, "y": y, "who": g}) + "\n" for t, y, g in rows))
    pq.write_table(pa.table({"review": [r[0] for r in rows], "y": [r[1] for r in rows], "who": [r[2] for r in rows]}), tmp_path / "c.parquet")
    cols = {"text": "review", "label": "y", "group": "who"}
    results = []
    for ext in ("csv", "tsv", "jsonl", "parquet"):
        p = params(tmp_path, **local("classify", {"train": tmp_path / f"c.{ext}"}, columns=cols, holdout_fraction=0.34))
        tables, prov = data.prepare(p)
        t = tables["classify"].to_pylist()
        results.append([(r["text"], r["label"], r["group"]) for r in t])
        assert prov["classify"]["files"][0]["format"] == ext and prov["classify"]["group_source"] == ["column"]
    assert all(r == [(t, y, g) for t, y, g in rows] for r in results)


def test_group_derived_from_identity_terms_when_no_group_column(tmp_path):
    f = tmp_path / "s.train"
    f.write_text("1 she and her sister loved it\n0 the man hated it\n1 nobody special\n0 he said she was fine , he left\n")
    tables, prov = data.prepare(params(tmp_path, **local("classify", {"train": f}, format="sst2", holdout_fraction=0.25)))
    t = tables["classify"].to_pylist()
    assert [r["group"] for r in t] == ["female", "male", "none", "male"]
    assert [r["label"] for r in t] == [1, 0, 1, 0]
    assert prov["classify"]["group_source"] == ["identity_terms"]


def test_crows_csv_with_unnamed_index(tmp_path):
    f = tmp_path / "crows.csv"
    f.write_text(',sent_more,sent_less,stereo_antistereo,bias_type,annotations\n7,"She cooks, well.",He cooks well.,stereo,gender,"[[\'gender\']]"\n9,A b.,C b.,antistereo,age,[]\n')
    tables, _ = data.prepare(params(tmp_path, **local("probe", {"test": f}, format="crows")))
    assert tables["probe"].to_pylist() == [
        {"id": "test-7", "sent_more": "She cooks, well.", "sent_less": "He cooks well.", "stereo_antistereo": "stereo", "bias_type": "gender"},
        {"id": "test-9", "sent_more": "A b.", "sent_less": "C b.", "stereo_antistereo": "antistereo", "bias_type": "age"},
    ]


def test_max_rows_caps_each_split(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(50)))
    tables, prov = data.prepare(params(tmp_path, **local("pretrain", {"train": f, "validation": f}, max_rows=5)))
    assert prov["pretrain"]["rows"] == {"train": 5, "validation": 5}
    assert tables["pretrain"].column("text").to_pylist()[:5] == [f"doc {i}" for i in range(5)]


# ----------------------------------------------------------------------------- hf (offline)


def test_hf_source_through_load_dataset_offline(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    repo = tmp_path / "sst2_like" / "data"
    repo.mkdir(parents=True)
    pq.write_table(pa.table({"idx": [0, 1, 2, 3], "sentence": ["she liked it", "he hated it", "good", "bad"], "label": [1, 0, 1, 0]}), repo / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"idx": [0, 1], "sentence": ["great", "awful"], "label": [1, 0]}), repo / "validation-00000-of-00001.parquet")
    ds = {"source": "hf", "hf": {"name": str(repo.parent), "revision": "v1.0"}, "splits": {"train": "train[:3]", "test": "validation"}, "columns": {"text": "sentence", "id": "idx"}}
    tables, prov = data.prepare(params(tmp_path, classify=ds))
    t = tables["classify"].to_pylist()
    assert [(r["id"], r["text"], r["label"], r["split"], r["group"]) for r in t] == [
        ("train-0", "she liked it", 1, "train", "female"),
        ("train-1", "he hated it", 0, "train", "male"),
        ("train-2", "good", 1, "train", "none"),
        ("test-0", "great", 1, "test", "none"),
        ("test-1", "awful", 0, "test", "none"),
    ]
    f = prov["classify"]["files"][0]
    assert f["location"] == f"hf://datasets/{repo.parent}@v1.0" and f["split_spec"] == "train[:3]"
    assert all(len(c["sha256"]) == 64 for c in f["cache_files"])


def test_hf_missing_dataset_is_one_line_error(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    ds = {"source": "hf", "hf": {"name": str(tmp_path / "nope"), "revision": "x"}, "splits": {"train": "train"}}
    with pytest.raises(EcoevalError, match=r"data.classify.splits.train.*load_dataset.*failed") as exc:
        data.prepare(params(tmp_path, classify=ds))
    assert "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- url


class Server:
    """A local HTTP server on 127.0.0.1 serving `files`; `fail_first[path]` 500s before succeeding."""

    def __init__(self, files: dict[str, bytes], fail_first: dict[str, int] | None = None):
        self.files, self.fail_first, self.hits = files, dict(fail_first or {}), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                if server.fail_first.get(self.path, 0) > 0:
                    server.fail_first[self.path] -= 1
                    self.send_error(500, "flaky")
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


SST = b"1 a fine film\n0 a dull film\n1 she was great\n0 he was bad\n"


def url_ds(url: str, digest: str, **extra) -> dict:
    return {"source": "url", "format": "sst2", "splits": {"train": url}, "sha256": {"train": digest}, "backoff_s": 0.01, "holdout_fraction": 0.25, **extra}


def test_url_download_verified_and_cached(tmp_path):
    digest = hashlib.sha256(SST).hexdigest()
    with Server({"/sst.txt": SST}) as srv:
        tables, prov = data.prepare(params(tmp_path, classify=url_ds(f"{srv.url}/sst.txt", digest)))
        assert tables["classify"].num_rows == 4 and prov["classify"]["files"][0]["sha256"] == digest
        data.prepare(params(tmp_path, classify=url_ds(f"{srv.url}/sst.txt", digest)))
        assert srv.hits == ["/sst.txt"]  # the second run reused the verified file
    assert [p.name for p in (tmp_path / "work" / "downloads").iterdir()] == [f"{digest[:16]}-sst.txt"]


def test_url_retries_after_server_error(tmp_path):
    digest = hashlib.sha256(SST).hexdigest()
    with Server({"/sst.txt": SST}, fail_first={"/sst.txt": 2}) as srv:
        tables, _ = data.prepare(params(tmp_path, classify=url_ds(f"{srv.url}/sst.txt", digest, retries=2)))
        assert srv.hits == ["/sst.txt"] * 3 and tables["classify"].num_rows == 4
    with Server({"/sst.txt": SST}, fail_first={"/sst.txt": 5}) as srv:
        with pytest.raises(EcoevalError, match=r"data.classify.splits.train: could not download .*HTTP 500.* after 2 attempt"):
            data.prepare(params(tmp_path / "b", classify=url_ds(f"{srv.url}/sst.txt", digest, retries=1)))


def test_url_wrong_sha256_leaves_no_file(tmp_path):
    with Server({"/sst.txt": SST}) as srv:
        with pytest.raises(EcoevalError, match=r"data.classify.splits.train: sha256 of .* is [0-9a-f]{64}, expected 0{64}"):
            data.prepare(params(tmp_path, classify=url_ds(f"{srv.url}/sst.txt", "0" * 64)))
    assert not any((tmp_path / "work" / "downloads").iterdir())


def test_url_unreachable_port_and_404(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EcoevalError, match=r"could not download http://127.0.0.1:\d+/x.txt .* after 2 attempt"):
        data.prepare(params(tmp_path, classify=url_ds(f"http://127.0.0.1:{port}/x.txt", "0" * 64, retries=1, timeout_s=2)))
    with Server({}) as srv:
        with pytest.raises(EcoevalError, match=r"HTTP 404.* after 1 attempt"):
            data.prepare(params(tmp_path, classify=url_ds(f"{srv.url}/missing.txt", "0" * 64, retries=3)))


def test_file_url(tmp_path):
    f = tmp_path / "s.txt"
    f.write_bytes(SST)
    tables, _ = data.prepare(params(tmp_path, classify=url_ds(f.as_uri(), hashlib.sha256(SST).hexdigest())))
    assert tables["classify"].num_rows == 4


# ----------------------------------------------------------------------------- bad input


# name -> (kind, file name, file content (None: no file), extra dataset keys, expected error)
BAD = {
    "missing_file": ("pretrain", "nope.txt", None, {}, r"nope.txt \(data.pretrain.splits.train\): file not found"),
    "empty_file": ("pretrain", "e.txt", b"  \n\n", {}, r"e.txt \(data.pretrain.splits.train\): file is empty"),
    "only_headings": ("pretrain", "h.txt", b" = A = \n\n = = B = = \n", {}, r"h.txt .*: no text left after reading and cleaning"),
    "csv_missing_column": ("classify", "c.csv", b"sentence,label\nhi,1\n", {}, r"c.csv .*: missing column 'text' \(set by data.classify.columns.text\); found columns: sentence, label"),
    "jsonl_missing_label": ("classify", "c.jsonl", b'{"text": "a"}\n{"text": "b"}\n', {}, r"c.jsonl .*: missing column 'label' \(set by data.classify.columns.label\); found columns: text"),
    "non_utf8": ("pretrain", "l.txt", "caf\u00e9 ok\n".encode("latin-1"), {}, r"l.txt .*: not UTF-8 text \(byte 3, line 1"),
    "label_not_binary": ("classify", "s.csv", b"text,label\na,1\nb,2\n", {}, r"s.csv .*: row 3: expected a binary label 0 or 1, got '2'"),
    "label_words": ("classify", "s.jsonl", b'{"text": "a", "label": "positive"}\n', {}, r"row 1: expected a binary label 0 or 1, got 'positive'"),
    "one_label_only": ("classify", "s.train", b"1 a\n1 b\n1 c\n", {"format": "sst2"}, r"data.classify.splits.train: expected both labels 0 and 1"),
    "probe_missing_columns": ("probe", "p.csv", b"sent_more,sent_less\na,b\n", {}, r"p.csv .*: missing column 'stereo_antistereo'"),
    "local_wrong_sha256": ("pretrain", "t.txt", b"some text\n", {"sha256": {"train": "a" * 64}}, r"t.txt .*: sha256 is [0-9a-f]{64}, expected a{64} \(data.pretrain.sha256.train\)"),
    "unknown_extension": ("pretrain", "t.dat", b"x\n", {}, r"data.pretrain.splits.train: cannot tell the format of .*t.dat.*; set data.pretrain.format"),
    "bad_jsonl": ("pretrain", "t.jsonl", b'{"text": "a"}\n{"text": \n', {}, r"t.jsonl .*: line 2 is not valid JSON"),
    "ragged_csv": ("classify", "t.csv", b"text,label\na,1,extra\n", {}, r"t.csv .*: line 2 has 3 fields, expected 2"),
    "not_parquet": ("pretrain", "t.parquet", b"not parquet", {}, r"t.parquet: not a readable Parquet file"),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """One good run whose outputs the bad runs must leave untouched."""
    tmp = tmp_path_factory.mktemp("good")
    out = run(tmp, params(tmp))
    return out, {k: p.read_bytes() for k, p in out.items()}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_data_input_one_line_and_earlier_results_kept(tmp_path, name, good_run):
    kind, fname, content, extra, pattern = BAD[name]
    if content is not None:
        (tmp_path / fname).write_bytes(content)
    out, before = good_run
    split = "test" if kind == "probe" else "train"
    p = params(tmp_path, **local(kind, {split: tmp_path / fname}, **extra))
    with pytest.raises(EcoevalError, match=pattern) as exc:
        data.run(p, {}, out, None)
    assert "\n" not in str(exc.value)
    assert {k: q.read_bytes() for k, q in out.items()} == before
    assert sorted(x.name for x in out["pretrain"].parent.iterdir()) == sorted(q.name for q in out.values())


@pytest.mark.parametrize(
    "section, key, pattern",
    [
        ({"source": "url", "splits": {"train": "ftp://example.org/x.txt"}, "sha256": {"train": "a" * 64}}, "data.pretrain.splits.train", r"expected an http, https or file URL, got 'ftp://example.org/x.txt'"),
        ({"source": "url", "splits": {"train": "/etc/passwd"}, "sha256": {"train": "a" * 64}}, "data.pretrain.splits.train", r"expected an http, https or file URL"),
        ({"source": "url", "splits": {"train": "https://example.org/x.txt"}}, "data.pretrain.sha256.train", r"url sources need a sha256 for every split"),
        ({"source": "local", "splits": {"dev": "x.txt"}}, "data.pretrain.splits.dev", r"expected a split named one of \['train', 'validation'\]"),
        ({"source": "local", "splits": {"validation": "x.txt"}}, "data.pretrain.splits", r"expected a 'train' split"),
        ({"source": "local"}, "data.pretrain.splits", r"source 'local' needs at least one split"),
        ({"source": "builtin", "splits": {"train": "x.txt"}}, "data.pretrain.splits", r"source 'builtin' takes no splits"),
        ({"source": "hf", "splits": {"train": "train"}, "hf": {"name": "x"}}, "data.pretrain.hf.revision", r"hf sources need a pinned revision"),
    ],
)
def test_config_checks_name_the_key(section, key, pattern):
    with pytest.raises(EcoevalError, match=rf"^config key {key}: {pattern}"):
        validate({"data": {"pretrain": section}})
    with pytest.raises(EcoevalError, match=rf"^config key experiments.e.{key}: {pattern}"):
        validate({"experiments": {"e": {"data": {"pretrain": section}}}})


def test_schema_defaults_for_new_keys():
    ds = load_schema()["$defs"]["dataset"]["properties"]
    assert ds["holdout_fraction"]["default"] == 0.1 and ds["backoff_s"]["default"] == 1.0
    cfg = validate({})
    assert cfg["data"]["builtin"]["neutral_fraction"] == 0.2 and cfg["data"]["pretrain"]["columns"]["id"] == "id"


# ----------------------------------------------------------------------------- CLI and real data


def test_cli_stage_download(tmp_path):
    p = params(tmp_path)
    out = {k: str(v) for k, v in outputs(tmp_path / "cli").items()}
    out["energy"] = str(tmp_path / "cli" / "energy" / "samples" / "download.parquet")
    io = {"input": {}, "output": out, "threads": 1}
    ok = subprocess.run([sys.executable, "-m", "ecoeval.cli", "stage", "download", "--params", json.dumps(p), "--io", json.dumps(io)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert all(Path(v).is_file() for v in out.values())
    bad = copy.deepcopy(p)
    bad["data"]["classify"] = {**bad["data"]["classify"], "source": "local", "splits": {"train": str(tmp_path / "none.csv")}}
    err = subprocess.run([sys.executable, "-m", "ecoeval.cli", "stage", "download", "--params", json.dumps(bad), "--io", json.dumps(io)], capture_output=True, text=True, timeout=120)
    assert err.returncode == 2
    assert err.stderr.strip().splitlines()[-1] == f"ecoeval: error: {tmp_path / 'none.csv'} (data.classify.splits.train): file not found"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_real_config_on_shared_data(tmp_path, monkeypatch):
    from ecoeval.config import experiment_config, load_config

    monkeypatch.chdir(ROOT)  # real.yaml's paths are relative to the project root
    cfg = experiment_config(load_config(ROOT / "workflow" / "configs" / "real.yaml"), "real")
    tables, prov = data.prepare(params(tmp_path, cfg=cfg))
    assert prov["classify"]["rows"] == {"test": 1821, "train": 6920}
    assert prov["probe"]["rows"] == {"all": 1508}
    assert prov["pretrain"]["rows"]["train"] > 500 and prov["pretrain"]["rows"]["validation"] > 500
    texts = tables["pretrain"].column("text").to_pylist()
    assert not any(data._HEADING.match(line) for t in texts for line in t.splitlines())
    assert texts[0].startswith("Homarus gammarus , known as the European lobster")
    groups = tables["classify"].column("group").to_pylist()
    assert {"female", "male", "none"} == set(groups) and groups.count("none") > len(groups) / 2
    gender = [r for r in tables["probe"].to_pylist() if r["bias_type"] == "gender"]
    assert len(gender) == 262
    assert prov["pretrain"]["files"][0]["sha256"] == "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"
