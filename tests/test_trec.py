import pytest

from irdistill.data.trec import ranked, read_qrels, read_run, write_qrels, write_run
from irdistill.errors import IrdistillError


def test_run_round_trip_keeps_order_and_depth(tmp_path):
    run = {"q1": {"a": 1.0, "b": 3.0, "c": 2.0}, "q2": {"x": 0.5}}
    path = tmp_path / "run.trec"
    write_run(path, run, tag="t")
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "b", "1", "3", "t"]
    assert [l.split()[2] for l in lines[:3]] == ["b", "c", "a"]
    assert read_run(path) == run
    assert read_run(path, depth=2) == {"q1": {"b": 3.0, "c": 2.0}, "q2": {"x": 0.5}}


def test_ties_broken_like_trec_eval():
    # trec_eval sorts by score, then by document id in decreasing order
    assert [d for d, _ in ranked({"a": 1.0, "c": 1.0, "b": 1.0})] == ["c", "b", "a"]


def test_graded_qrels_stay_graded(tmp_path):
    path = tmp_path / "qrels.txt"
    write_qrels(path, {"q1": {"a": 2, "b": 0, "c": 3}})
    assert read_qrels(path) == {"q1": {"a": 2, "b": 0, "c": 3}}


@pytest.mark.parametrize("content, words", [
    ("q1 Q0 d1 1 1.5\n", ["line 1", "6 columns", "found 5"]),
    ("q1 Q0 d1 1 1.5 t\nq1 Q0 d2 2 abc t\n", ["line 2", "'abc' is not a number"]),
    ("q1 Q0 d1 1 1.5 t\nq1 Q0 d1 2 1.0 t\n", ["line 2", "appears twice"]),
    ("q1 Q0 d1 1 nan t\n", ["line 1", "not finite"]),
])
def test_bad_run_lines_name_the_line(tmp_path, content, words):
    path = tmp_path / "bad.trec"
    path.write_text(content)
    with pytest.raises(IrdistillError) as info:
        read_run(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.trec"
    empty.write_text("")
    with pytest.raises(IrdistillError, match="empty"):
        read_run(empty)
    with pytest.raises(IrdistillError, match="directory"):
        read_run(tmp_path)
    with pytest.raises(IrdistillError, match="not found"):
        read_run(tmp_path / "nope.trec")
    latin = tmp_path / "latin.trec"
    latin.write_bytes("q1 Q0 d\xe9 1 1.0 t\n".encode("latin-1"))
    with pytest.raises(IrdistillError, match="UTF-8"):
        read_run(latin)
    qrels = tmp_path / "q.txt"
    qrels.write_text("q1 0 d1 x\n")
    with pytest.raises(IrdistillError, match="not an integer"):
        read_qrels(qrels)


def test_files_of_other_tools_read_as_those_tools_read_them(tmp_path):
    """Windows line endings, a UTF-8 byte-order mark, gzip (by content, whatever the name) and
    BEIR's header line; a damaged gzip file gets the usual one-line error."""
    import gzip

    from irdistill.data.collection import load_qrels
    from irdistill.data.trec import read_qrels, read_run
    from irdistill.errors import IrdistillError

    run_text = "q1 Q0 d1 1 2.5 x\r\nq1 Q0 d2 2 1.5 x\r\nq2 Q0 d3 1 0.5 x\r\n"
    want = {"q1": {"d1": 2.5, "d2": 1.5}, "q2": {"d3": 0.5}}
    (tmp_path / "crlf.trec").write_bytes(run_text.encode())
    (tmp_path / "bom.trec").write_bytes(b"\xef\xbb\xbf" + run_text.encode())
    (tmp_path / "run.trec.gz").write_bytes(gzip.compress(run_text.encode()))
    (tmp_path / "named-plain.trec").write_bytes(gzip.compress(run_text.encode()))
    for name in ("crlf.trec", "bom.trec", "run.trec.gz", "named-plain.trec"):
        assert read_run(tmp_path / name) == want, name
    (tmp_path / "qrels.txt.gz").write_bytes(gzip.compress(b"q1 0 d1 1\r\nq2 0 d3 2\r\n"))
    assert read_qrels(tmp_path / "qrels.txt.gz") == {"q1": {"d1": 1}, "q2": {"d3": 2}}
    beir = b"\xef\xbb\xbfquery-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n"
    (tmp_path / "test.tsv.gz").write_bytes(gzip.compress(beir))
    assert load_qrels(tmp_path / "test.tsv.gz") == {"q1": {"d1": 1}}
    (tmp_path / "torn.trec.gz").write_bytes(gzip.compress(run_text.encode())[:25])
    with pytest.raises(IrdistillError, match="torn.trec.gz.*gzip-compressed run file is damaged"):
        read_run(tmp_path / "torn.trec.gz")


def test_a_document_file_with_a_byte_order_mark_keeps_its_first_id(tmp_path):
    from irdistill.data.collection import load_collection

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "docs.tsv").write_bytes(b"\xef\xbb\xbfd1\tfirst text\r\nd2\tsecond text\r\n")
    docs = load_collection(folder).docs
    assert dict(docs) == {"d1": "first text", "d2": "second text"}
    assert docs.get_many(["d1"]) == {"d1": "first text"}
