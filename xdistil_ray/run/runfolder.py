"""The run folder: paths, atomic writes and commit markers, on any pyarrow filesystem.

A step's output set is valid only once its marker (``COMPLETE``, naming every file with its
size: a :class:`~xdistil_ray.run.markers.Marker`) exists; the marker is written after every file it names. Readers trust only
what a marker names, and :meth:`RunFolder.verify` checks the files against it (the pipeline does
before it skips a complete step: a missing or cut file makes the step run again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import uuid
from typing import Any, TypeVar

import pyarrow.fs as pafs

from xdistil_ray.run import markers
from xdistil_ray.run import storage
from xdistil_ray.run.markers import Marker, Started
from xdistil_ray.run.storage import StorageOptions

log = logging.getLogger(__name__)

MARKER = markers.COMPLETE
STARTED = markers.STARTED
"""Marker of a resumable step's first attempt (its config fingerprint): a re-run with changed
fields would mix old and new work, and is refused like a change to a complete step."""

M = TypeVar("M", bound=Marker)

UPLOAD_CHUNK = 8 << 20
"""Bytes read from a local file per write when uploading it (S3: the multipart upload's parts
are pyarrow's, 10 MiB and up)."""


def relative_to(path: str, base: str) -> str:
    """``path`` below ``base``, by name alone (posixpath.relpath would make object-store keys
    absolute against this process's working directory)."""
    prefix = base.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not under {base}")
    return path[len(prefix):]


class RunFolder:
    """A run folder on local disk or in object storage, through one pyarrow filesystem API.

    Args:
        uri: a local path or a URI (``s3://bucket/prefix``).
        options: how to reach object storage (endpoint, region, retries; never credentials).
    """

    def __init__(self, uri: str, options: StorageOptions | None = None):
        if not storage.is_remote(uri):
            uri = os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)
        self.uri = uri.rstrip("/")
        self.options = storage.resolved(self.uri, options or StorageOptions())
        self.fs, self.root = storage.filesystem(self.uri, self.options)

    def __reduce__(self):
        # Rebuilt from the URI on each worker, which reads its own credentials.
        return (RunFolder, (self.uri, self.options))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def uri_of(self, *parts: str) -> str:
        """URI of ``parts`` under the run (a local path for a local run)."""
        return posixpath.join(self.uri, *parts)

    def path(self, *parts: str) -> str:
        """Filesystem path of ``parts`` under the run root (for ``self.fs``)."""
        return posixpath.join(self.root, *parts)

    def local_path(self, *parts: str) -> str:
        """Path usable by plain ``open`` (local run folders only)."""
        assert self.is_local, "not a local run folder"
        return self.path(*parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> str:
        path = self.path(*parts)
        self.fs.create_dir(path, recursive=True)
        return path

    def delete(self, *parts: str) -> None:
        """Removes a file or folder, if it exists."""
        info = self.fs.get_file_info(self.path(*parts))
        try:
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(info.path)
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(info.path)
        except FileNotFoundError:  # an object store's empty "folder" that lists as nothing
            pass

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Writes a file so that readers see either nothing or all of it."""
        with self._output(rel) as f:
            f.write(data)

    def write_file(self, rel: str, local: str) -> int:
        """Copies the local file ``local`` to ``rel`` in chunks of :data:`UPLOAD_CHUNK` bytes
        (a model or checkpoint larger than the process's free memory uploads), as
        :meth:`write_bytes` writes; returns its size."""
        size = 0
        with open(local, "rb") as src, self._output(rel) as f:
            # a plain loop: NativeFile.upload queues up to 50 chunks for its writer thread,
            # which held 200 MiB of a 256 MiB file when the disk wrote slower than it read
            while chunk := src.read(UPLOAD_CHUNK):
                f.write(chunk)
                size += len(chunk)
        return size

    @contextlib.contextmanager
    def _output(self, rel: str):
        """A stream to ``rel``: locally a temporary file renamed into place when it is whole
        (rename is atomic on one filesystem); in object storage the object itself, which
        appears when the stream closes (a multipart upload completes then). A stream cut off
        by an error may leave a short object there: readers trust only the files a marker names,
        at the size it names."""
        path = self.path(rel)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        if not self.is_local:
            with self.fs.open_output_stream(path) as f:
                yield f
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(tmp) as f:
                yield f
            self.fs.move(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Writes ``rel`` only if it does not exist; whether this call created it. Local disk:
        an ``O_EXCL`` open (the data written before the name appears: a temp file linked to
        the name). S3: a ``PUT`` with ``If-None-Match: *`` (AWS S3 and the S3-compatible stores
        that implement conditional writes)."""
        path = self.path(rel)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        if self.is_local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # fails if the name exists, atomically
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        return storage.put_if_absent(self.uri_of(rel), data, self.options)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=False).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def list_files(self, rel: str) -> dict[str, int]:
        """Files under ``rel`` (recursive) as {path relative to rel: size in bytes}."""
        base = self.path(rel)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True,
                                                            allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return {
            relative_to(i.path, base): i.size
            for i in infos
            if i.type == pafs.FileType.File
        }

    # ------------------------------------------------------------------ markers

    def commit(self, rel: str, marker: M | None = None) -> M:
        """Writes ``rel/COMPLETE``: ``marker`` (default: a plain :class:`Marker`), naming every
        file now under ``rel`` unless it names its files itself. Returns the marker written."""
        marker = Marker() if marker is None else marker
        if marker.files is None:
            marker.files = {
                name: size
                for name, size in self.list_files(rel).items()
                if posixpath.basename(name) != MARKER and ".tmp-" not in name
            }
        marker.files = dict(sorted(marker.files.items()))
        self.write_bytes(posixpath.join(rel, MARKER), markers.dump(marker))
        return marker

    def marker(self, rel: str, kind: type[M] = Marker) -> M | None:
        """The marker of ``rel`` as ``kind``, or None when the set is not committed. A marker
        that does not parse (empty, cut short, not a manifest) counts as absent: the step runs
        again; one written by a newer xdistil_ray is refused
        (:class:`~xdistil_ray.run.markers.MarkerVersionError`)."""
        path = posixpath.join(rel, MARKER)
        try:
            data = self.read_bytes(path)
        except FileNotFoundError:
            return None
        marker = markers.load(data, kind, self.uri_of(path))
        return marker if marker is not None and marker.files is not None else None

    def started(self, rel: str) -> Started | None:
        """A resumable step's ``STARTED`` marker, or None when it has not started."""
        path = posixpath.join(rel, STARTED)
        try:
            data = self.read_bytes(path)
        except FileNotFoundError:
            return None
        return markers.load(data, Started, self.uri_of(path))

    def start(self, rel: str, fingerprint: dict) -> None:
        """Writes ``rel/STARTED`` with the fingerprint the step starts with."""
        self.write_bytes(posixpath.join(rel, STARTED), markers.dump(Started(fingerprint)))

    def read_object(self, rel_path: str) -> dict | None:
        """A JSON object (a lease, a tracker's run id), or None when it is missing or does not
        parse (a console line says which)."""
        try:
            data = self.read_bytes(rel_path)
        except FileNotFoundError:
            return None
        return markers.json_object(data, self.uri_of(rel_path))

    def is_complete(self, rel: str) -> bool:
        return self.marker(rel) is not None

    def verify(self, rel: str, marker: Marker | None = None) -> list[str]:
        """What differs between ``rel``'s files and its marker (one listing): a line per file
        that is missing or whose size differs; empty when every named file is there whole."""
        marker = marker if marker is not None else self.marker(rel)
        if marker is None:
            return [f"{self.uri_of(rel)}: not complete (no {MARKER} marker)"]
        found = self.list_files(rel)
        problems = []
        for name, size in marker.files.items():
            got = found.get(name)
            if got is None:
                problems.append(f"{self.uri_of(rel, name)}: missing ({MARKER} names it with "
                                f"{size} bytes)")
            elif got != size:
                problems.append(f"{self.uri_of(rel, name)}: {got} bytes, {MARKER} says {size}")
        return problems

    def committed_files(self, rel: str) -> list[str]:
        """Full filesystem paths of the files the marker of ``rel`` names, checked for size.

        Raises:
            FileNotFoundError: when ``rel`` has no marker.
            RuntimeError: when a named file is missing or its size differs.
        """
        marker = self.marker(rel)
        if marker is None:
            raise FileNotFoundError(f"{self.path(rel)} is not complete (no {MARKER} marker)")
        problems = self.verify(rel, marker)
        if problems:
            raise RuntimeError("; ".join(problems))
        return [self.path(rel, name) for name in marker.files]

    def download(self, rel: str, local_dir: str, subdir: str = "") -> str:
        """Copies the committed files of ``rel`` (only those under ``subdir``, if given) into
        ``local_dir``; returns ``local_dir``."""
        marker = self.marker(rel)
        if marker is None:
            raise FileNotFoundError(f"{self.path(rel)} is not complete (no {MARKER} marker)")
        os.makedirs(local_dir, exist_ok=True)
        prefix = subdir.rstrip("/") + "/" if subdir else ""
        for name in marker.files:
            if not name.startswith(prefix):
                continue
            dest = os.path.join(local_dir, name[len(prefix):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            pafs.copy_files(self.path(rel, name), dest, source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        return local_dir

    def upload(self, local_dir: str, rel: str) -> dict[str, int]:
        """Copies every file of ``local_dir`` to ``rel``; returns {name: size} for the marker."""
        files = {}
        for dirpath, _, names in os.walk(local_dir):
            for name in names:
                src = os.path.join(dirpath, name)
                sub = os.path.relpath(src, local_dir).replace(os.sep, "/")
                files[sub] = self.write_file(posixpath.join(rel, sub), src)
        return files
