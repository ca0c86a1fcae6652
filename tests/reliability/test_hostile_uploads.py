"""Hostile dataset uploads over real HTTP: each gets a 4xx naming its problem, nothing is stored.

One ``regtune serve`` (no workers) with small limits answers the whole corpus. Zip bombs
must be refused from their ``.npy`` headers, without being expanded (the server's peak
memory is watched), and a pickled object array must never be unpickled (its payload would
create a file).
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from servers import Server, problem, sqlite_rows, workerless_server

from trainer.data.readers import load_npz

pytestmark = pytest.mark.slow

MAX_BYTES = 2_000_000
MAX_ROWS = 100_000
MAX_COLUMNS = 1_000
MAX_MEMORY = 64_000_000


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], *, deflate: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zeros_bomb(shape: tuple[int, int]) -> bytes:
    """An NPZ whose X really is ``shape`` float64 zeros, streamed through deflate."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            member.write(npy_header(shape))
            chunk, left = bytes(1 << 22), shape[0] * shape[1] * 8
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        archive.writestr("y.npy", npy(np.arange(shape[0]) % 2))
    return buffer.getvalue()


Y4 = npy(np.array([0, 1, 0, 1]))
GOOD_X = np.arange(40.0).reshape(20, 2)
GOOD_Y = np.arange(20) % 2
LABEL = {"target": "label"}


def csv_rows(n: int) -> bytes:
    return b"a,label\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(n))


# pytest.param(filename, content, form fields, status, fragment of the detail, id=...)
CORPUS = [
    # CSV: structure
    pytest.param(
        "t.csv", b"a,b,label\n1,2,0\n3,4,1\n5,", LABEL, 422,
        "body.file: CSV line 4 has 2 fields, the header has 3", id="csv-truncated",
    ),
    pytest.param(
        "r.csv", b"a,b,label\n1,2,0\n3,4,5,1\n", LABEL, 422,
        "body.file: CSV line 3 has 4 fields, the header has 3", id="csv-ragged",
    ),
    pytest.param(
        "q.csv", b'a,label\n"1,0\n2,1\n', LABEL, 422,
        "body.file: CSV line 3 has 1 fields, the header has 2", id="csv-unclosed-quote",
    ),
    pytest.param(
        "e.csv", b"", LABEL, 422,
        "body.file: the CSV needs a header row and at least one data row", id="csv-empty",
    ),
    pytest.param(
        "h.csv", b"a,label\n\n\n", LABEL, 422,
        "body.file: the CSV needs a header row and at least one data row", id="csv-header-only",
    ),
    pytest.param(
        "h.csv", b"a" * 300_000 + b",label\n1,0\n2,1\n", LABEL, 422,
        "body.file: CSV line 1: field larger than field limit", id="csv-huge-header-line",
    ),
    pytest.param(
        "d.csv", b"a,a,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", LABEL, 422,
        "body.file: the CSV header names column 'a' twice", id="csv-duplicate-columns",
    ),
    pytest.param(
        "d.csv", b"label,a,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", LABEL, 422,
        "body.file: the CSV header names column 'label' twice", id="csv-duplicate-target",
    ),
    pytest.param(
        "l.csv", b"a,label\n1,caf\xe9\n2,th\xe9\n", LABEL, 422,
        "body.file: the CSV is not UTF-8 text", id="csv-not-utf8",
    ),
    # CSV: values
    pytest.param(
        "n.csv", b"a,b,label\n1,,0\n2,NA,1\n3,nan,0\n4,,1\n", LABEL, 422,
        "body.file: column 'b' is blank in every row; remove it", id="csv-all-blank-column",
    ),
    pytest.param(
        "i.csv", b"a,label\n1,0\n2,1\n-inf,0\n4,1\n", LABEL, 422,
        "body.file: CSV line 4, column 'a': '-inf' is not finite", id="csv-inf",
    ),
    pytest.param(
        "w.csv", b"a,label\n1,0\n2,\n3,0\nNA,1\n5,\n", LABEL, 422,
        "body.file: target column 'label' is blank in 2 of 5 rows (CSV lines 3, 6); fill them "
        "in, or upload with missing_target=drop", id="csv-blank-target",
    ),
    pytest.param(
        "z.csv", b"a,label\n1\x00,0\n2,1\n", LABEL, 422,
        "body.file: CSV line 2, column 'a': a NUL character in a cell", id="csv-nul-byte",
    ),
    pytest.param(
        "ids.csv", b"a,label\n" + b"".join(b"x%d,%d\n" % (i, i % 2) for i in range(100_000)),
        LABEL, 422, "body.file: no feature column is left: 'a': more than 50 distinct values",
        id="csv-categorical-with-100000-levels",
    ),
    pytest.param(
        "cell.csv", b"a,label\n" + b"x" * 1_000_000 + b",0\n2,1\n", LABEL, 422,
        "body.file: CSV line 2: field larger than field limit", id="csv-one-megabyte-cell",
    ),
    pytest.param(
        "classes.csv", b"a,label\n" + b"".join(b"%d,c%d\n" % (i, i // 2) for i in range(20_000)),
        LABEL, 422, "body.file: the target has 10000 classes; the limit is 1000",
        id="csv-target-with-10000-classes",
    ),
    pytest.param(
        "strings.csv",
        (",".join(f"c{i}" for i in range(10_000)) + ",label\n").encode()
        + (",".join("s" for _ in range(10_000)) + ",0\n").encode(), LABEL, 413,
        "10000 feature columns; the limit is 1000", id="csv-header-of-10000-string-columns",
    ),
    pytest.param(
        "s.csv", b"a,label\n1,0\n2,0\n3,0\n", LABEL, 422,
        "body.file: classification needs at least 2 classes, found 1", id="csv-single-class",
    ),
    pytest.param(
        "o.csv", b"a,label\n1,cat\n2,dog\n3,cow\n", LABEL, 422,
        "body.file: class 'cat' has only 1 sample; cross-validation needs at least 2",
        id="csv-one-sample-per-class",
    ),
    pytest.param(
        "g.csv", b"a,label\n1,x\n2,y\n3,x\n", {**LABEL, "task": "regression"}, 422,
        "body.file: a regression target must be numeric", id="csv-regression-on-words",
    ),
    pytest.param(
        "g.csv", b"a,label\n1,0.5\n2,nan\n3,0.25\n", {**LABEL, "task": "regression"}, 422,
        "body.file: target column 'label' is blank in 1 of 3 rows", id="csv-regression-nan-target",
    ),
    # CSV: form fields
    pytest.param(
        "m.csv", b"a,b\n1,2\n3,4\n", LABEL, 422,
        "body.file: target column 'label' not in the CSV header ['a', 'b']",
        id="csv-missing-target-column",
    ),
    pytest.param(
        "m.csv", b"a,label\n1,0\n2,1\n", {}, 422,
        "body.file: a CSV upload needs the form field 'target'", id="csv-no-target-field",
    ),
    pytest.param(
        "m.csv", b"a,label\n1,0\n2,1\n", {**LABEL, "task": "clustering"}, 422,
        "body.task: Input should be 'classification' or 'regression'", id="bad-task",
    ),
    pytest.param(
        "m.csv", b"a,label\n1,0\n2,1\n", {"target": "t" * 201}, 422,
        "body.target: String should have at most 200 characters", id="target-too-long",
    ),
    pytest.param(
        "m.csv", b"a,label\n1,0\n2,1\n", {**LABEL, "name": "n\x00"}, 422,
        "body.name: name must not contain control characters, got '\\x00' at position 1",
        id="name-with-nul",
    ),
    pytest.param(
        "f" * 300 + ".csv", b"a,label\n1,0\n2,1\n", LABEL, 422,
        "body.file: the file name has 304 characters; the limit is 200", id="file-name-too-long",
    ),
    # file types
    pytest.param(
        "x.txt", b"a,label\n1,0\n2,1\n", LABEL, 422,
        "body.file: file 'x.txt': upload a .csv or an .npz file", id="wrong-extension",
    ),
    pytest.param(
        "data", b"a,label\n1,0\n2,1\n", LABEL, 422,
        "body.file: file 'data': upload a .csv or an .npz file", id="no-extension",
    ),
    pytest.param(
        "e.npz", b"", {}, 422,
        "body.file: not a readable NPZ file of numeric arrays: File is not a zip file",
        id="npz-empty",
    ),
    pytest.param(
        "c.npz", b"a,label\n1,0\n2,1\n", {}, 422,
        "body.file: not a readable NPZ file of numeric arrays", id="npz-that-is-a-csv",
    ),
    pytest.param(
        "t.npz", npz(X=GOOD_X, y=GOOD_Y)[:-40], {}, 422,
        "body.file: not a readable NPZ file of numeric arrays", id="npz-truncated-archive",
    ),
    # NPZ: arrays
    pytest.param(
        "m.npz", npz(X=GOOD_X), {}, 422,
        "body.file: the NPZ file lacks array(s) ['y']; it has ['X']", id="npz-missing-y",
    ),
    pytest.param(
        "b.npz", zip_of({"X": b"\0" * 10_000, "y": Y4}), {}, 422,
        "body.file: the NPZ file lacks array(s) ['X', 'y']", id="npz-bare-member-names",
    ),
    pytest.param(
        "l.npz", npz(X=np.zeros((4, 2)), y=np.arange(3) % 2), {}, 422,
        "body.file: features have 4 rows but the target has 3 values", id="npz-length-mismatch",
    ),
    pytest.param(
        "3.npz", npz(X=np.zeros((4, 2, 2)), y=np.arange(4) % 2, input_shape=np.array([2, 1])),
        {}, 422,
        "body.file: input_shape (2, 1) disagrees with the shape of each sample in X (2, 2) "
        "(X is (4, 2, 2)): leave input_shape out, or give (2, 2)",
        id="npz-3d-X-with-another-input-shape",
    ),
    pytest.param(
        "1.npz", npz(X=np.zeros(4), y=np.arange(4) % 2), {}, 422,
        "body.file: features must be an array [samples, features] or [samples, *input_shape], "
        "got shape (4,)",
        id="npz-1d-X",
    ),
    pytest.param(
        "2.npz", npz(X=GOOD_X, y=np.zeros((20, 2))), {}, 422,
        "body.file: the target must be a 1-D array, got shape (20, 2)", id="npz-2d-y",
    ),
    pytest.param(
        "0.npz", npz(X=np.zeros((0, 2)), y=np.zeros(0)), {}, 422,
        "body.file: need at least 2 samples and 1 feature, got shape (0, 2)", id="npz-zero-rows",
    ),
    pytest.param(
        "n.npz", npz(X=np.array([[1.0], [2.0], [np.nan], [4.0]]), y=np.arange(4) % 2), {}, 422,
        "body.file: features must be finite: 1 NaN/inf values, first at row 2, column 0",
        id="npz-nan",
    ),
    pytest.param(
        "c.npz", npz(X=np.zeros((4, 2), dtype=complex), y=np.arange(4) % 2), {}, 422,
        "body.file: features must be real numbers, got dtype complex128", id="npz-complex",
    ),
    pytest.param(
        "s.npz", npz(X=np.array([["a"], ["b"], ["c"], ["d"]]), y=np.arange(4) % 2), {}, 422,
        "body.file: features must be real numbers, got dtype <U1", id="npz-strings",
    ),
    pytest.param(
        "o.npz", npz(X=GOOD_X, y=np.array(["a", "b"] + ["c"] * 18)), {}, 422,
        "body.file: class 'a' has only 1 sample", id="npz-one-sample-per-class",
    ),
    # NPZ: headers that lie, and bombs
    pytest.param(
        "neg.npz", zip_of({"X.npy": npy_header((-1, 4)) + bytes(4000), "y.npy": Y4}), {}, 422,
        "body.file: array 'X' declares a negative dimension in its shape (-1, 4)",
        id="npz-negative-dimension",
    ),
    pytest.param(
        "short.npz", zip_of({"X.npy": npy_header((4, 2)) + bytes(40), "y.npy": Y4}), {}, 422,
        "body.file: array 'X' is truncated: 40 of 64 bytes of data", id="npz-member-truncated",
    ),
    pytest.param(
        "long.npz", zip_of({"X.npy": npy_header((4, 2)) + bytes(64 + 1000), "y.npy": Y4}), {},
        422, "body.file: array 'X' has data beyond the (4, 2) its header declares",
        id="npz-member-overlong",
    ),
    pytest.param(
        "rows.npz", zip_of({"X.npy": npy_header((10**12, 2)), "y.npy": Y4}), {}, 413,
        f"1000000000000 rows; the limit is {MAX_ROWS}", id="npz-header-claims-huge-rows",
    ),
    pytest.param(
        "cols.npz", zip_of({"X.npy": npy_header((4, 10**9)), "y.npy": Y4}), {}, 413,
        f"1000000000 feature columns; the limit is {MAX_COLUMNS}", id="npz-header-claims-columns",
    ),
    pytest.param(
        "ystr.npz",
        zip_of({"X.npy": npy(np.zeros((2, 1))), "y.npy": npy_header((2,), "<U100000000")}),
        {}, 413, f"the arrays take 800000024 bytes in memory; the limit is {MAX_MEMORY}",
        id="npz-huge-string-dtype",
    ),
    pytest.param(
        "shape.npz", npz(X=GOOD_X, y=GOOD_Y, input_shape=np.zeros(10**5, dtype=np.int64)), {},
        422, "body.file: input_shape must be a 1-D integer array of at most 8 values",
        id="npz-huge-input-shape",
    ),
    pytest.param(
        "shape.npz", npz(X=np.zeros((20, 12)), y=GOOD_Y, input_shape=np.array([-3, -4])), {},
        422, "body.file: input_shape (-3, -4) must hold positive sizes",
        id="npz-negative-input-shape",
    ),
    # size limits
    pytest.param(
        "wide.csv", (",".join(f"c{i}" for i in range(1001)) + ",label\n").encode(), LABEL, 413,
        f"1001 feature columns; the limit is {MAX_COLUMNS}", id="csv-too-many-columns",
    ),
    pytest.param(
        "long.csv", csv_rows(MAX_ROWS + 1), LABEL, 413,
        f"{MAX_ROWS + 1} rows; the limit is {MAX_ROWS}", id="csv-too-many-rows",
    ),
    pytest.param(
        "big.csv", b"0" * (MAX_BYTES + 150_000), LABEL, 413,
        "request body over the limit", id="too-many-bytes",
    ),
]  # fmt: skip


server = workerless_server(
    "hostile-uploads",
    REGTUNE_MAX_UPLOAD_BYTES=str(MAX_BYTES),
    REGTUNE_MAX_UPLOAD_ROWS=str(MAX_ROWS),
    REGTUNE_MAX_UPLOAD_COLUMNS=str(MAX_COLUMNS),
    REGTUNE_MAX_UPLOAD_MEMORY_BYTES=str(MAX_MEMORY),
)


def stored(server: Server) -> tuple[int, int]:
    """(datasets the API lists, dataset rows in the database)."""
    with server.client() as http:
        listed = http.get("/v1/datasets")
    assert listed.status_code == 200, listed.text
    return len(listed.json()), sqlite_rows(server.database_url, "regtune_datasets")


def upload(server: Server, filename: str, content: bytes, data: dict[str, str]) -> httpx.Response:
    with server.client() as http:
        return http.post("/v1/datasets", files={"file": (filename, content)}, data=data)


def peak_rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc")


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CORPUS) >= 20
    assert len({case.id for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("filename", "content", "data", "status", "fragment"), CORPUS)
def test_hostile_upload_is_refused_by_name_and_nothing_is_stored(
    server: Server,
    filename: str,
    content: bytes,
    data: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    before = stored(server)
    response = upload(server, filename, content, data)
    assert response.status_code == status, response.text[:2000]
    assert fragment in problem(response), problem(response)[:2000]
    assert stored(server) == before


def test_a_zip_bomb_is_refused_without_being_expanded(server: Server) -> None:
    """800 MB of zeros in a 0.8 MB file: refused from its header, the server's peak unmoved."""
    shape = (MAX_ROWS, MAX_COLUMNS)  # within the row and column limits, far over the memory
    bomb = zeros_bomb(shape)
    assert len(bomb) < MAX_BYTES
    before, peak = stored(server), peak_rss_mb(server.proc.pid)
    started = time.monotonic()
    response = upload(server, "bomb.npz", bomb, {})
    elapsed = time.monotonic() - started
    assert response.status_code == 413, response.text[:2000]
    expanded = shape[0] * shape[1] * 8 + shape[0] * 8
    assert f"the arrays take {expanded + shape[0] * shape[1] * 4} bytes" in problem(response)
    assert peak_rss_mb(server.proc.pid) - peak < 100, "the bomb was expanded in memory"
    assert elapsed < 15, f"refusing the bomb took {elapsed:.1f} s"
    assert stored(server) == before


class Payload:
    """Unpickling this creates ``path``: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_pickled_object_array_is_refused_and_never_unpickled(
    server: Server, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    objects = np.array([Payload(marker), Payload(marker)], dtype=object)
    buffer = io.BytesIO()
    np.save(buffer, objects, allow_pickle=True)
    assert str(marker).encode() in buffer.getvalue()  # the payload is in the file
    for members in (
        {"X.npy": buffer.getvalue(), "y.npy": npy(np.array([0, 1]))},
        {"X.npy": npy(np.zeros((2, 1))), "y.npy": buffer.getvalue()},
    ):
        before = stored(server)
        response = upload(server, "evil.npz", zip_of(members, deflate=True), {})
        assert response.status_code == 422, response.text
        assert "holds Python objects (dtype object)" in problem(response), problem(response)
        assert stored(server) == before
    assert not marker.exists(), "the server unpickled an uploaded object array"


@pytest.mark.parametrize("order", ["C", "F"])
def test_npz_arrays_read_from_their_headers_equal_numpys(order: str) -> None:
    X = np.array(np.arange(60.0).reshape(20, 3) ** 1.5, order=order)
    y = np.arange(20) % 3
    data = load_npz(npz(X=X, y=y, input_shape=np.array([1, 3])))
    assert np.array_equal(data.X, X.astype(np.float32)) and np.array_equal(data.y, y)
    assert data.input_shape == (1, 3)


def test_a_valid_upload_is_still_stored(server: Server) -> None:
    """The control case: the same server and counting, files that are fine."""
    before = stored(server)
    for filename, content, data in (
        ("ok.csv", csv_rows(50), LABEL),
        ("ok.npz", npz(X=GOOD_X, y=GOOD_Y, input_shape=np.array([1, 2])), {}),
        ("fortran.npz", npz(X=np.asfortranarray(GOOD_X), y=GOOD_Y), {}),
    ):
        response = upload(server, filename, content, data)
        assert response.status_code == 201, response.text
    assert stored(server) == (before[0] + 3, before[1] + 3)


def test_the_server_survived_the_corpus(server: Server) -> None:
    assert server.proc.poll() is None
    log = Path(server.log).read_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
