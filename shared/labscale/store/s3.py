"""`s3://bucket/prefix` backend (boto3): AWS S3 and S3-compatible stores (SeaweedFS, MinIO, Ceph, GCS).

Endpoint, region and credentials come from the standard AWS environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION / AWS_REGION, AWS_PROFILE), read by
boto3 itself. With a custom endpoint, requests use path-style addressing. Requests are retried
with backoff a bounded number of times (AWS_MAX_ATTEMPTS, default 5); an endpoint that still does not
answer (refused, timed out, 5xx) raises `StoreUnavailable`: one line naming the endpoint, exit 1.
Files above 8 MiB move as multipart transfers. Integrity is the manifest's job (`ArtifactStore`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    ClientError, ConnectionError as BotoConnectionError, HTTPClientError, NoCredentialsError, ParamValidationError,
)

from labscale.errors import BadInputError
from labscale.store.backend import StoredObject, StoreUnavailable
from labscale.store.file import honour_umask

MiB = 1 << 20
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _server_side(exc: ClientError) -> bool:
    """A 5xx or throttling answer that outlasted the retries: the service, not the request, is at fault."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or _code(exc) in {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable"}


class S3Backend:
    """Objects under `prefix/` in an existing S3 bucket; implements `labscale.store.backend.Backend`."""

    def __init__(self, bucket: str, prefix: str = "", *, max_attempts: int | None = None,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0,
                 transfer: TransferConfig | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            retries={"max_attempts": max_attempts or int(os.environ.get("AWS_MAX_ATTEMPTS") or 5),
                     "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if endpoint else None,
        )
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None
        self.attempts = config.retries["max_attempts"]
        self.client: Any = boto3.session.Session().client("s3", region_name=region, config=config)
        self.transfer = transfer or TransferConfig(
            multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=8)
        self._check_bucket()

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Backend:
        """Parse `s3://bucket[/prefix]`."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise BadInputError(f"store URI {uri!r}: no bucket — fix: use s3://BUCKET/PREFIX")
        return cls(bucket, prefix, **kwargs)

    @contextmanager
    def _answering(self, what: str) -> Iterator[None]:
        """Turn "the endpoint did not answer, even after the retries" into one line (`StoreUnavailable`)."""
        try:
            yield
        except (BotoConnectionError, HTTPClientError, S3UploadFailedError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        except ClientError as exc:
            if not _server_side(exc):
                raise
            detail = f"{_code(exc) or 'server error'}: {str(exc).splitlines()[0]}"
        else:
            return
        raise StoreUnavailable(
            f"S3 endpoint {self.client.meta.endpoint_url} did not answer after {self.attempts} attempts while {what} "
            f"({detail}) — fix: check that the endpoint is up and reachable "
            "(AWS_ENDPOINT_URL), then rerun") from None

    def _check_bucket(self) -> None:
        """Fail fast, as bad input, when the bucket is missing or not ours to use."""
        where = f"S3 bucket {self.bucket!r} at {self.client.meta.endpoint_url}"
        try:
            with self._answering(f"checking bucket {self.bucket!r}"):
                self.client.head_bucket(Bucket=self.bucket)
        except ParamValidationError as exc:
            raise BadInputError(f"{where}: invalid bucket name — fix: use a valid S3 bucket name in the store URI") from exc
        except NoCredentialsError as exc:
            raise BadInputError(f"{where}: no AWS credentials — fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from exc
        except ClientError as exc:
            code = _code(exc)
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise BadInputError(
                    f"{where} does not exist — fix: create it (aws s3 mb s3://{self.bucket}) or correct the store URI"
                ) from exc
            if code in _DENIED:
                raise BadInputError(
                    f"{where}: access denied ({code}) — fix: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    "and the bucket's permissions") from exc
            if code in {"400", "InvalidBucketName"}:
                raise BadInputError(f"{where}: invalid bucket name — fix: use a valid S3 bucket name in the store URI") from exc
            raise

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
            raise ValueError(f"store key escapes the store root or is malformed: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, src: Path) -> None:
        """Upload `src` (multipart above the threshold)."""
        with self._answering(f"uploading {self.uri}/{key}"):
            self.client.upload_file(str(src), self.bucket, self._key(key), Config=self.transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._answering(f"writing {self.uri}/{key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, dest: Path) -> None:
        """Download to a temp file beside `dest`, then rename: a failure never leaves a partial `dest`."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        os.close(fd)
        try:
            with self._answering(f"downloading {self.uri}/{key}"):
                self.client.download_file(self.bucket, self._key(key), tmp, Config=self.transfer)
            honour_umask(tmp)
            os.replace(tmp, dest)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(f"{self.uri}/{key}: no such object") from exc
            raise
        finally:
            Path(tmp).unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            with self._answering(f"reading {self.uri}/{key}"):
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(f"{self.uri}/{key}: no such object") from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            with self._answering(f"looking up {self.uri}/{key}"):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        """Keys (relative to the store prefix) that start with `prefix`, sorted."""
        return [obj.key for obj in self.list_objects(prefix)]

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Objects (keys relative to the store prefix) whose key starts with `prefix`, sorted by key."""
        base = f"{self.prefix}/" if self.prefix else ""
        objects: list[StoredObject] = []
        with self._answering(f"listing {self.uri}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix):
                objects += [StoredObject(obj["Key"][len(base):], obj["Size"], obj["LastModified"])
                            for obj in page.get("Contents", ())]
        return sorted(objects, key=lambda obj: obj.key)

    def delete(self, key: str) -> None:
        with self._answering(f"deleting {self.uri}/{key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
