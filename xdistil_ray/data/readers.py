"""Finding corpus files and reading them as Ray Datasets of raw rows.

Files are read as raw bytes lines (text and JSON Lines) so that a bad byte costs only its own
line, never the rest of the file; decoding happens in :mod:`xdistil_ray.tasks.corpus`.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
from ray.data.datasource import FileBasedDatasource

from xdistil_ray.run import storage
from xdistil_ray.config import ConfigError

SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet",
            ".tsv": "tsv", ".csv": "csv"}
_LINES_PER_BLOCK = 8192
_HF_FORMATS = {"parquet": "parquet", "json": "jsonl", "csv": "csv", "text": "txt",
               "arrow": "arrow"}
"""`datasets` packaged builders whose data files this module reads itself (hub datasets)."""


@dataclass(frozen=True)
class CorpusSource:
    """Resolved input: ``kind`` is ``files`` (with ``files`` and their ``fmt``), ``hf_disk``
    (a `datasets.save_to_disk` folder) or ``hf_hub`` (a hub id or hub-style folder in
    ``path``, with its ``config`` name)."""

    kind: str
    path: str
    files: tuple[str, ...] = ()
    fmt: str = ""
    fs: Any = None
    """pyarrow filesystem of ``files`` (object storage); None = local files."""
    split: str = "train"
    """The split a `datasets` input (``hf:`` or ``save_to_disk``) is read from."""
    config: str = ""
    """``hf:<id>:<config>``'s dataset config name (as GLUE's ``sst2``); empty = the default."""


def describe(source: CorpusSource | None, value: str) -> str:
    """An input as ``--dry-run`` names it: its path with its files' count and format."""
    if source is None:
        return f"{value} (generated into inputs/ when the run starts)"
    if source.kind == "files":
        n = len(source.files)
        return f"{source.path} ({n} {source.fmt} file{'s' if n != 1 else ''})"
    return f"{source.path} ({source.kind})"


def parse_hf(spec: str) -> tuple[str, str]:
    """``hf:<id>[:<config>]`` -> (id, config name or "")."""
    body = spec[3:]
    name, _, config = body.partition(":") if body.count(":") == 1 else (body, "", "")
    if not name:
        raise ConfigError(f"{spec!r}: give a dataset after hf: (hf:<id> or hf:<id>:<config>)")
    return name, config


def resolve_source(path: str, field: str,
                   options: storage.StorageOptions | None = None,
                   split: str = "train") -> CorpusSource:
    """Finds the files behind an input path; raises ConfigError naming ``field`` if none.

    Accepts a file, a folder (its .txt/.jsonl/.parquet/.tsv/.csv files, recursively), a glob,
    a folder written by `datasets.save_to_disk`, ``hf:<hub id or folder>[:<config>]``, or an
    ``s3://bucket/key`` file or prefix (read with the run's storage settings and the standard
    AWS credentials). ``split``: the split of a `datasets` input.
    """
    if path.startswith("hf:"):
        name, config = parse_hf(path)
        return CorpusSource("hf_hub", name, split=split, config=config)
    if storage.is_remote(path):
        return _resolve_remote(path, field, options or storage.StorageOptions(), split)
    if os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _DISK_MARKERS):
        return CorpusSource("hf_disk", path, (os.path.abspath(path),), split=split)
    if os.path.isdir(path):
        candidates = glob.glob(os.path.join(path, "**", "*"), recursive=True)
    elif glob.has_magic(path):
        candidates = glob.glob(path, recursive=True)
    elif os.path.isfile(path):
        candidates = [path]
    else:
        raise ConfigError(f"{field}: {path!r} does not exist")
    files = sorted(os.path.abspath(p) for p in candidates
                   if os.path.isfile(p) and _suffix(p) in SUFFIXES)
    return _files_source(path, field, files, None)


def _files_source(path: str, field: str, files: list[str], fs) -> CorpusSource:
    if not files:
        raise ConfigError(f"{field}: {path!r} matches no .txt, .jsonl, .parquet, .tsv or .csv "
                          "file")
    formats = {SUFFIXES[_suffix(p)] for p in files}
    if len(formats) > 1:
        raise ConfigError(f"{field}: {path!r} mixes file formats {sorted(formats)}; use one")
    sizes = ([os.path.getsize(p) for p in files] if fs is None
             else [i.size for i in fs.get_file_info(files)])
    if not any(sizes):
        raise ConfigError(f"{field}: {path!r}: its {len(files)} file(s) are all empty")
    return CorpusSource("files", path, tuple(files), formats.pop(), fs)


_DISK_MARKERS = ("dataset_dict.json", "state.json")
"""Files at the top of a `datasets.save_to_disk` folder (a DatasetDict's, a Dataset's)."""


def _resolve_remote(path: str, field: str, options: storage.StorageOptions,
                    split: str) -> CorpusSource:
    """A file or a prefix (its files, recursively) in object storage; a prefix that
    `datasets.save_to_disk` wrote is read as such."""
    storage.check_access(path, options, field, write=False)
    fs, root = storage.filesystem(path, options)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        candidates = [root]
    elif info.type == pafs.FileType.Directory:
        candidates = [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                      if i.type == pafs.FileType.File]
        if {posixpath.join(root, m) for m in _DISK_MARKERS} & set(candidates):
            return CorpusSource("hf_disk", path, (root,), "", fs, split)
    else:
        raise ConfigError(f"{field}: {path!r} does not exist")
    files = sorted(p for p in candidates if _suffix(p) in SUFFIXES
                   and not posixpath.basename(p).startswith("."))
    return _files_source(path, field, files, fs)


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def read_raw(source: CorpusSource, *, columns: list[str], max_line_bytes: int = 0):
    """Reads a resolved source as a Ray Dataset of raw rows, streaming: neither files nor
    `datasets` inputs (their arrow or parquet files) pass through the driver.

    Returns:
        (dataset, encoding): ``encoding`` tells :func:`xdistil_ray.tasks.corpus.clean_rows` how the
        ``raw`` column is encoded (``txt``, ``jsonl`` or ``records``).
    """
    import ray.data

    squad = squad_records(source, columns)
    if squad is not None:
        return ray.data.from_items(squad), "records"
    if source.kind != "files":
        source = data_files(source)
    if source.fmt in ("txt", "jsonl"):
        return (ray.data.read_datasource(LinesDatasource(list(source.files), source.fs,
                                                         max_line_bytes)), source.fmt)
    if source.fmt in ("tsv", "csv"):
        header = delimited_header(source, columns)
        return (ray.data.read_datasource(DelimitedDatasource(
            list(source.files), source.fs, source.fmt, columns, header)), "records")
    if source.fmt == "arrow":
        ds = ray.data.read_datasource(ArrowStreamDatasource(list(source.files), source.fs))
    else:
        ds = ray.data.read_parquet(list(source.files), filesystem=source.fs)
    missing = [c for c in columns if c not in ds.columns()]
    if missing:
        raise ConfigError(f"{source.path}: has no column {missing[0]!r}; columns: {ds.columns()}")
    return ds.select_columns(columns), "records"


def load_records(source: CorpusSource, *, columns: list[str]) -> tuple[list, str]:
    """Reads a small input (a labeled set) into memory, without Ray. Integer labels of a
    `datasets` ``ClassLabel`` column (and lists of them: token tags) are read as their names.

    Returns:
        (rows, encoding) as :func:`xdistil_ray.tasks.corpus.clean_rows` takes them.
    """
    if source.kind == "files" and source.fmt == "txt":
        raise ConfigError(f"{source.path}: labeled data needs .jsonl, .parquet, .tsv, .csv or a "
                          "dataset with text and label columns, not .txt")
    squad = squad_records(source, columns)
    if squad is not None:
        return squad, "records"
    if source.kind == "files" and source.fmt == "jsonl":
        lines: list[bytes] = []
        fs = source.fs or pafs.LocalFileSystem()
        for path in source.files:
            with fs.open_input_stream(path) as f:
                data = f.read()
            lines.extend(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"))
        return lines, "jsonl"
    if source.kind == "files" and source.fmt in ("tsv", "csv"):
        header = delimited_header(source, columns)
        fs = source.fs or pafs.LocalFileSystem()
        rows = []
        for path in source.files:
            with fs.open_input_stream(path) as f:
                rows.extend(delimited_records(_chunks(f), source.fmt, columns, header))
        return rows, "records"
    if source.kind == "files":
        import pyarrow.parquet as pq

        tables = [pq.read_table(p, filesystem=source.fs) for p in source.files]
        names = _class_names(tables[0].schema, columns) if tables else {}
        rows = [r for t in tables for r in t.to_pylist()]
    elif source.kind == "hf_disk":  # its arrow files, local or in object storage
        files = _disk_files(source)
        fs = source.fs or pafs.LocalFileSystem()
        tables = []
        for path in files.files:
            with fs.open_input_stream(path) as f:
                tables.append(pa.ipc.open_stream(f).read_all())
        names = _feature_class_names(_disk_features(source, files), columns)
        rows = [r for t in tables for r in t.to_pylist()]
    else:
        data = _load_hf(source)
        names = _feature_class_names(data.features, columns)
        rows = list(data)
    if rows and any(c not in rows[0] for c in columns):
        missing = [c for c in columns if c not in rows[0]]
        raise ConfigError(f"{source.path}: has no column {missing[0]!r}; columns: {list(rows[0])}")
    return [{c: _named(r.get(c), names.get(c)) for c in columns} for r in rows], "records"


def _named(value, names: list[str] | None):
    """A ClassLabel value (or list of them) as its name(s); -1 (no label, as in GLUE's test
    splits) and out-of-range values as None."""
    if names is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_named(v, names) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else None
    return value


def _feature_class_names(features, columns: list[str]) -> dict[str, list[str]]:
    """{column: ClassLabel names} for the ``columns`` that are ClassLabel features (or lists
    of them)."""
    import datasets

    out = {}
    for c in columns:
        feature = features.get(c) if features else None
        inner = getattr(feature, "feature", None)
        for f in (feature, inner):
            if isinstance(f, datasets.ClassLabel):
                out[c] = list(f.names)
    return out


def _class_names(schema: pa.Schema, columns: list[str]) -> dict[str, list[str]]:
    """ClassLabel names that `datasets` wrote into a parquet file's metadata."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    import datasets

    try:
        features = datasets.Features.from_dict(json.loads(meta)["info"]["features"])
    except (ValueError, KeyError, TypeError):
        return {}
    return _feature_class_names(features, columns)


def data_files(source: CorpusSource) -> CorpusSource:
    """A `datasets` input as the files that hold its split, for streaming reads: a
    ``save_to_disk`` folder's arrow files; a hub dataset's (or hub-style folder's) parquet,
    JSON Lines, CSV, text or arrow files, read from the hub by `huggingface_hub`'s filesystem
    (the hub's own parquet conversion is what most hub datasets are)."""
    if source.kind == "hf_disk":
        return _disk_files(source)
    import datasets

    try:
        builder = datasets.load_dataset_builder(source.path, source.config or None)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds for a bad id or config
        raise ConfigError(f"hf:{source.path}: cannot be loaded ({type(e).__name__}: {e})") from None
    fmt = _HF_FORMATS.get(builder.name)
    files = (builder.config.data_files or {}).get(source.split) if fmt else None
    if fmt is None:
        raise ConfigError(f"hf:{source.path}: its data are {builder.name!r} files; "
                          f"readable are {sorted(_HF_FORMATS)}")
    if not files:
        splits = list(builder.config.data_files or {})
        raise ConfigError(f"hf:{source.path}: no split {source.split!r}; splits: {splits}")
    files = [str(f) for f in files]
    fs = None
    if any(f.startswith("hf://") for f in files):
        from huggingface_hub import HfFileSystem

        fs = pafs.PyFileSystem(pafs.FSSpecHandler(HfFileSystem()))
        files = [f[len("hf://"):] for f in files]
    return CorpusSource("files", source.path, tuple(files), fmt, fs, source.split)


def _disk_files(source: CorpusSource) -> CorpusSource:
    """A ``save_to_disk`` folder's split: its arrow files (``fmt`` arrow)."""
    fs = source.fs or pafs.LocalFileSystem()
    root = source.files[0]
    if _exists(fs, posixpath.join(root, "dataset_dict.json")):
        splits = _read_json(fs, posixpath.join(root, "dataset_dict.json")).get("splits", [])
        if source.split not in splits:
            raise ConfigError(f"{source.path}: no split {source.split!r}; splits: {splits}")
        root = posixpath.join(root, source.split)
    state = _read_json(fs, posixpath.join(root, "state.json"))
    files = [posixpath.join(root, d["filename"]) for d in state.get("_data_files", [])]
    return CorpusSource("files", source.path, tuple(files), "arrow", source.fs, source.split)


def _disk_features(source: CorpusSource, files: CorpusSource):
    """The `datasets` features a ``save_to_disk`` split's dataset_info.json records, or None."""
    import datasets

    fs = source.fs or pafs.LocalFileSystem()
    info = posixpath.join(posixpath.dirname(files.files[0]), "dataset_info.json") \
        if files.files else ""
    if not info or not _exists(fs, info):
        return None
    try:
        return datasets.Features.from_dict(_read_json(fs, info)["features"])
    except (KeyError, TypeError, ValueError):
        return None


def _exists(fs, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def _read_json(fs, path: str):
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def squad_records(source: CorpusSource, columns: list[str]) -> list[dict] | None:
    """The rows (``columns`` of each) of official SQuAD ``.json`` files (one JSON document of
    nested ``data/paragraphs/qas``); None when the source's files are not such documents.

    Raises:
        ConfigError: a ``.json`` file with a top-level ``data`` list that is not SQuAD's
            layout, or SQuAD files mixed with other files.
    """
    from xdistil_ray.tasks import qa

    if source.kind != "files" or source.fmt != "jsonl":
        return None
    fs = source.fs or pafs.LocalFileSystem()
    rows: list[dict] = []
    others = []
    for path in source.files:
        doc = _json_document(fs, path) if _suffix(path) == ".json" else None
        if not (isinstance(doc, dict) and isinstance(doc.get("data"), list)):
            others.append(path)
            continue
        try:
            rows.extend({c: r.get(c) for c in columns} for r in qa.squad_rows(doc))
        except qa.NotSquad as e:
            raise ConfigError(f"{source.path}: {path}: {e}") from None
    if not rows and len(others) == len(source.files):
        return None
    if others:
        raise ConfigError(f"{source.path}: mixes SQuAD .json files with other files "
                          f"({others[0]}); give one kind")
    return rows


def _json_document(fs, path: str, peek: int = 1 << 20):
    """The JSON document in ``path``, or None for JSON Lines (a first line that parses alone
    as a row) and for files that do not parse: only a file that is one document is read whole."""
    with fs.open_input_stream(path) as f:
        head = f.read(peek)
    first = head.split(b"\n", 1)[0]
    try:
        row = json.loads(first)
        if not (isinstance(row, dict) and "data" in row) or len(first) < len(head.rstrip()):
            return None  # a row of JSON Lines (a one-line document is the whole file)
        return row
    except ValueError:
        pass
    with fs.open_input_stream(path) as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError:
        return None


def _load_hf(source: CorpusSource):
    """A hub dataset's split (or a hub-style folder's), memory-mapped (labeled sets: small)."""
    import datasets

    try:
        data = datasets.load_dataset(source.path, source.config or None)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds for a bad id
        raise ConfigError(f"hf:{source.path}: cannot be loaded "
                          f"({type(e).__name__}: {e})") from None
    if source.split not in data:
        raise ConfigError(f"{source.path}: no split {source.split!r}; splits: {list(data)}")
    return data[source.split]


def utf8_cut(data: bytes, limit: int) -> bytes:
    """``data``'s first ``limit`` bytes, less a UTF-8 sequence that the cut would split."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and limit - end < 3 and (data[end] & 0xC0) == 0x80:
        end -= 1  # data[end] continues a character: cut before that character
    return data[:end]


class LinesDatasource(FileBasedDatasource):
    """Reads files as raw byte lines: column ``raw`` (binary), split on ``\\n`` only, and
    ``cut`` (bool): with ``max_line_bytes``, a longer line keeps only its first bytes (at a
    character boundary) and is marked cut. Time is linear in the file and memory bounded by a
    block's lines: a line is joined once from its chunks, and past the limit its bytes are
    skipped, not kept (a 1 GB line used to be re-copied per 1 MiB chunk: quadratic)."""

    def __init__(self, paths: list[str], filesystem=None, max_line_bytes: int = 0):
        super().__init__(paths, filesystem=filesystem)
        self._max = max_line_bytes

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        reader = _LineCutter(self._max)
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            reader.feed(chunk)
            if len(reader.lines) >= _LINES_PER_BLOCK:
                yield reader.table()
        reader.finish()
        if reader.lines:
            yield reader.table()


class _LineCutter:
    """Splits chunks into lines, each kept to ``limit`` bytes (0: whole)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.lines: list[bytes] = []
        self.cut: list[bool] = []
        self._pending: list[bytes] = []  # the current line's pieces so far
        self._bytes, self._over = 0, False

    def _take(self, part: bytes) -> None:
        if self.limit and self._bytes + len(part) > self.limit:
            if not self._over:  # its first bytes, and 3 more for the character boundary
                self._pending.append(part[:self.limit - self._bytes + 3])
            self._over = True
        else:
            self._pending.append(part)
        self._bytes += len(part)

    def _end_line(self) -> None:
        line = b"".join(self._pending)
        self.lines.append(utf8_cut(line, self.limit) if self._over else line)
        self.cut.append(self._over)
        self._pending, self._bytes, self._over = [], 0, False

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b"\n")
        for part in parts[:-1]:
            self._take(part)
            self._end_line()
        self._take(parts[-1])

    def finish(self) -> None:
        if self._bytes:  # a last line without a newline is still a line
            self._end_line()

    def table(self) -> pa.Table:
        out = pa.table({"raw": pa.array(self.lines, pa.large_binary()),
                        "cut": pa.array(self.cut, pa.bool_())})
        self.lines, self.cut = [], []
        return out


def _chunks(f: pa.NativeFile, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def _text_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Lines (with their ``\\n``) decoded one at a time, a bad byte kept as a surrogate so that
    it costs only its own row; a line across many chunks is joined once, not re-copied."""
    pending: list[bytes] = []
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            pending.append(chunk)
            continue
        pending.append(parts[0])
        yield b"".join(pending).decode("utf-8", "surrogateescape") + "\n"
        for part in parts[1:-1]:
            yield part.decode("utf-8", "surrogateescape") + "\n"
        pending = [parts[-1]]
    last = b"".join(pending)
    if last:
        yield last.decode("utf-8", "surrogateescape")


_SURROGATE = re.compile("[\udc80-\udcff]")


def _csv_reader(lines: Iterator[str], fmt: str):
    """TSV: tab-separated, no quoting (XtremeDistil's train.tsv / dev.tsv: a quote is text);
    CSV: comma-separated, double quotes (fields may hold commas and newlines)."""
    csv.field_size_limit(2**31 - 1)
    if fmt == "tsv":
        return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(lines, delimiter=",", quotechar='"')


def _first_record(fs, path: str, fmt: str) -> list[str]:
    with fs.open_input_stream(path) as f:
        for record in _csv_reader(_text_lines(_chunks(f)), fmt):
            return [field.lstrip("\ufeff") if i == 0 else field for i, field in enumerate(record)]
    return []


def delimited_header(source: CorpusSource, columns: list[str]) -> bool:
    """Whether the source's .tsv/.csv files start with a header row: one naming every column
    asked for. Without one, a file's columns are the asked-for ones in order (text, then the
    second sentence of a pair, then the label: XtremeDistil's ``sentence<TAB>label``).

    Raises:
        ConfigError: files that disagree, or a headerless file with too few columns.
    """
    fs = source.fs or pafs.LocalFileSystem()
    kinds = {}
    for path in source.files:
        first = _first_record(fs, path, source.fmt)
        if not first:
            continue  # an empty file: no rows either way
        header = all(c in first for c in columns)
        if not header and len(first) < len(columns):
            raise ConfigError(
                f"{source.path}: {path}: its first row is not a header naming {columns}, and as "
                f"a headerless file it has {len(first)} column(s) where {len(columns)} are read "
                f"in this order: {columns}")
        kinds[header] = path
    if len(kinds) > 1:
        raise ConfigError(f"{source.path}: {kinds[True]} starts with a header and {kinds[False]} "
                          "does not; give files of one kind")
    return kinds.get(True, False)


def delimited_records(chunks: Iterator[bytes], fmt: str, columns: list[str],
                      header: bool) -> Iterator[dict]:
    """One file's rows as dicts of ``columns`` plus :data:`xdistil_ray.tasks.corpus.ROW_REASON`
    ("" or why the row is bad: a field count unlike the file's first row's, bytes that are not
    UTF-8, an empty line)."""
    from xdistil_ray.tasks import corpus

    index: dict[str, int] = {}
    width = 0
    for record in _csv_reader(_text_lines(chunks), fmt):
        if not index:
            record = [f.lstrip("\ufeff") if i == 0 else f for i, f in enumerate(record)]
            width = len(record)
            index = ({c: record.index(c) for c in columns} if header
                     else {c: i for i, c in enumerate(columns)})
            if header:
                continue
        row = dict.fromkeys(columns)
        if not record:
            reason = corpus.EMPTY
        elif len(record) != width:
            reason = corpus.BAD_ROW
        else:
            row.update((c, record[i]) for c, i in index.items())
            bad = any(_SURROGATE.search(row[c]) for c in columns)
            reason = corpus.INVALID_UTF8 if bad else ""
            if bad:
                row = dict.fromkeys(columns)
        row[corpus.ROW_REASON] = reason
        yield row


class DelimitedDatasource(FileBasedDatasource):
    """Reads .tsv/.csv files as rows of ``columns`` (strings) and
    :data:`xdistil_ray.tasks.corpus.ROW_REASON`."""

    def __init__(self, paths: list[str], filesystem, fmt: str, columns: list[str], header: bool):
        super().__init__(paths, filesystem=filesystem)
        self._fmt, self._columns, self._header = fmt, columns, header

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        from xdistil_ray.tasks import corpus

        names = self._columns + [corpus.ROW_REASON]
        rows: list[dict] = []
        for row in delimited_records(_chunks(f), self._fmt, self._columns, self._header):
            rows.append(row)
            if len(rows) >= _LINES_PER_BLOCK:
                yield pa.Table.from_pylist(rows, pa.schema([(n, pa.string()) for n in names]))
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, pa.schema([(n, pa.string()) for n in names]))


class ArrowStreamDatasource(FileBasedDatasource):
    """Reads the arrow (IPC stream) files that `datasets` writes, in blocks of at least
    _LINES_PER_BLOCK rows: `datasets` writes record batches of 1,000 rows, and a block per
    batch is metadata the driver keeps for every block of a pass (a 10^6-row corpus read a
    batch per block took the driver's peak memory from 573 to 742 MiB against 10^5 rows,
    benchmarks/scale.py --format save_to_disk)."""

    def __init__(self, paths: list[str], filesystem=None):
        super().__init__(paths, filesystem=filesystem)

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        batches, rows = [], 0
        for batch in pa.ipc.open_stream(f):
            batches.append(batch)
            rows += batch.num_rows
            if rows >= _LINES_PER_BLOCK:
                yield pa.Table.from_batches(batches)
                batches, rows = [], 0
        if batches:
            yield pa.Table.from_batches(batches)
