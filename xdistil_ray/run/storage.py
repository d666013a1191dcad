"""Where run folders and inputs live: local disk or S3 (AWS or an S3-compatible store).

Credentials are never taken from a config: pyarrow's S3 client reads the standard AWS sources
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, the profile in
``~/.aws`` named by ``AWS_PROFILE``, web identity, the instance role) on every process that
opens the store, so nothing secret is pickled to Ray workers or written to the run folder.
:func:`check_access` fails fast, before any compute, on a wrong endpoint, a missing bucket or
refused credentials.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from xdistil_ray.errors import ConfigError

S3_SCHEMES = ("s3", "s3a")


class StorageError(ConfigError):
    """The object store cannot be used as configured; the message says why and what to check."""


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage (never credentials)."""

    endpoint: str = ""
    """``http(s)://host:port`` of an S3-compatible store; empty = AWS, or the standard
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` environment variables."""
    region: str = ""
    """Empty = ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``."""
    max_attempts: int = 10
    """Attempts per request, with jittered exponential backoff capped at 20 s (AWS's standard
    retry mode). With 10, a request to a store that is down gives up after 59-75 s (a read),
    76-84 s (a write), 18-25 s (boto3's conditional put of the lease), against 0.4-2.3 s with
    the SDKs' 3 (``benchmarks/storage_outage.py``); a longer outage is waited out by the step
    (``storage.OUTAGE_WAIT_S``)."""
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 60.0


def is_remote(uri: str) -> bool:
    return "://" in uri and urlsplit(uri).scheme not in ("", "file")


def check_uri(uri: str, field: str) -> None:
    """Refuses URIs that carry credentials (``s3://KEY:SECRET@bucket``, ``?secret_key=``) or
    that name no bucket."""
    if not is_remote(uri):
        return
    parts = urlsplit(uri)
    if "@" in parts.netloc or re.search(r"(access|secret|session)[_-]?(key|token)", parts.query,
                                        re.IGNORECASE):
        raise ConfigError(f"{field}: credentials do not belong in a URI (they would be written "
                          "to config.yaml and logs); use the AWS environment variables, a "
                          "profile or the machine's role")
    if parts.query:
        raise ConfigError(f"{field}: {_safe(uri)}: query options are not supported; use the "
                          "storage section (storage.endpoint, storage.region)")
    if parts.scheme in S3_SCHEMES and not parts.netloc:
        raise ConfigError(f"{field}: {uri!r} names no bucket; use s3://bucket/prefix")


def _safe(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def endpoint_of(options: StorageOptions) -> str:
    return (options.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "")


class S3Store(pafs.S3FileSystem):
    """pyarrow's S3 filesystem on the default AWS credential chain, with our timeouts and
    retries. pyarrow pickles an S3 filesystem without its retry strategy; this
    one is rebuilt from its options wherever it lands (Ray Data tasks, Ray Train's controller
    and workers), so that every process rides out the same outages."""

    def __init__(self, options: StorageOptions, max_attempts: int | None = None,
                 request_timeout_s: float | None = None):
        kwargs = {}
        endpoint = endpoint_of(options)
        if endpoint:
            parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme)
        region = (options.region or os.environ.get("AWS_REGION")
                  or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        super().__init__(
            region=region, connect_timeout=options.connect_timeout_s,
            request_timeout=request_timeout_s or options.request_timeout_s,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts or options.max_attempts),
            **kwargs)
        self._args = (options, max_attempts, request_timeout_s)

    def __reduce__(self):
        return (S3Store, self._args)


def filesystem(uri: str, options: StorageOptions | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    if not is_remote(uri):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    parts = urlsplit(uri)
    if parts.scheme in S3_SCHEMES:
        return S3Store(options or StorageOptions()), f"{parts.netloc}{parts.path}".rstrip("/")
    return pafs.FileSystem.from_uri(uri)


def put_if_absent(uri: str, data: bytes, options: StorageOptions) -> bool:
    """Creates the object ``uri`` only if it does not exist (``If-None-Match: *``, which
    pyarrow's filesystem cannot send); whether this call created it."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import ClientError

    parts = urlsplit(uri)
    region = (options.region or os.environ.get("AWS_REGION")
              or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    client = boto3.client(
        "s3", endpoint_url=endpoint_of(options) or None, region_name=region,
        config=BotoConfig(retries={"max_attempts": options.max_attempts, "mode": "standard"},
                          connect_timeout=options.connect_timeout_s,
                          read_timeout=options.request_timeout_s))
    try:
        client.put_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"), Body=data,
                          IfNoneMatch="*")
        return True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed",
                                                        "ConditionalRequestConflict") or \
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
            return False
        raise OSError(f"{_safe(uri)}: {e}") from e


def resolved(uri: str, options: StorageOptions) -> StorageOptions:
    """``options`` with the region of an AWS bucket filled in when neither the config nor the
    environment gives one (pyarrow asks S3 where the bucket is), so that every process that
    unpickles the run folder talks to the right region."""
    if (not is_remote(uri) or urlsplit(uri).scheme not in S3_SCHEMES or options.region
            or endpoint_of(options) or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")):
        return options
    try:
        region = pafs.resolve_s3_region(urlsplit(uri).netloc)
    except OSError:  # unreachable or missing (check_access says which): the SDK's default
        region = "us-east-1"
    return dataclasses.replace(options, region=region)


def describe(options: StorageOptions) -> str:
    return endpoint_of(options) or "AWS S3"


def check_access(uri: str, options: StorageOptions, field: str = "output",
                 write: bool = True) -> None:
    """Checks, in seconds, that ``uri``'s bucket answers, exists, and accepts these credentials
    (and a write, with ``write``).

    Raises:
        StorageError: saying whether the endpoint, the bucket or the credentials are wrong.
    """
    if not is_remote(uri) or urlsplit(uri).scheme not in S3_SCHEMES:
        return
    parts = urlsplit(uri)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    where = f"{field}: {_safe(uri)} at {describe(options)}"
    fs = S3Store(options, max_attempts=2, request_timeout_s=5)
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise _explain(e, where, bucket, options) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{where}: bucket {bucket!r} does not exist (create it, or fix the "
                           "bucket name)")
    if not write:
        return
    probe = "/".join(p for p in (bucket, prefix, f".xdistil-probe-{uuid.uuid4().hex}") if p)
    try:
        with fs.open_output_stream(probe) as f:
            f.write(str(time.time()).encode())
        fs.delete_file(probe)
    except OSError as e:
        raise _explain(e, where, bucket, options, "writing a probe object") from None


_AUTH = ("ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID",
         "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "MISSING_AUTHENTICATION",
         "EXPIRED_TOKEN", "ExpiredToken")


def _explain(e: OSError, where: str, bucket: str, options: StorageOptions,
             doing: str = "") -> StorageError:
    text = str(e)
    code = re.search(r"AWS Error ([A-Z_]+)", text)
    code = code.group(1) if code else "unknown"
    doing = f" ({doing})" if doing else ""
    if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not resolve" in text:
        return StorageError(f"{where}: cannot reach the object store{doing}: {code}. Check the "
                            "endpoint (storage.endpoint or AWS_ENDPOINT_URL) and the network.")
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return StorageError(f"{where}: bucket {bucket!r} does not exist{doing}")
    if any(marker in text for marker in _AUTH):
        return StorageError(
            f"{where}: the credentials were refused{doing}: {code}. Check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or the instance role) and the bucket's "
            "permissions.")
    return StorageError(f"{where}: storage error{doing}: {text}")


OUTAGE_WAIT_S = 600.0
"""How long a step waits for the store to answer again after a storage error that outlasted
the requests' own retries (``storage.max_attempts``: about a minute), before it gives up."""


def is_storage_error(e: BaseException) -> bool:
    """Whether ``e`` (or what it wraps: a Ray task's error carries its cause's text) is the
    object store failing to answer, as opposed to a bug or a bad input."""
    text = str(e)
    return "AWS Error" in text or "curlCode" in text


def first_line(e: BaseException, limit: int = 200) -> str:
    """The line of ``e`` that names the store's error, at most about ``limit`` characters: a
    longer one keeps its start and its ``AWS Error ...`` part (an object key can be long
    enough to push the error itself past the limit), the middle elided."""
    lines = [line for line in str(e).splitlines() if "AWS Error" in line] or str(e).splitlines()
    if not lines:
        return type(e).__name__
    line = lines[0].strip()
    if len(line) <= limit:
        return line
    at = line.find("AWS Error")
    tail = line[at:at + limit // 2] if at >= 0 else ""
    if not tail or at + len(tail) <= limit:
        return line[:limit]
    return f"{line[:limit - len(tail) - 5]} ... {tail}"


def wait_until_reachable(uri: str, options: StorageOptions, wait_s: float = OUTAGE_WAIT_S,
                         poll_s: float = 5.0) -> float:
    """Blocks until :func:`check_access` passes for ``uri``; the seconds waited. Raises its
    StorageError after ``wait_s``."""
    start = time.time()
    while True:
        try:
            check_access(uri, options)
            return time.time() - start
        except StorageError:
            if time.time() - start > wait_s:
                raise
            time.sleep(poll_s)
