"""Blobs in an S3 bucket (AWS S3, SeaweedFS, MinIO, Ceph...), for replicated hubs.

URL: ``s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=R&access_key=K&secret_key=S
&public_endpoint=https://...``. Without ``access_key`` the standard AWS variables and
files apply (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``...). ``public_endpoint`` is the address
clients use for presigned URLs when it differs from the hub's (a load balancer in front
of the object store). The bucket is created when missing.

Keys: ``PREFIX/blobs/<sha256>`` for finished blobs and ``PREFIX/uploads/<upload id>`` for
direct uploads being assembled. Clients move bytes straight to and from the bucket
through presigned URLs: downloads are a redirect, uploads are an S3 multipart upload
whose parts the client PUTs itself. Before a direct upload becomes a blob, the hub
checks its size (HEAD) and its sha256 by reading the object back once: S3's own
checksums of multipart objects are checksums of part checksums, not the sha256 that
names the blob, and not every S3 server implements them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the S3 blob store needs boto3: pip install 'fedpact[s3]'") from exc
from starlette.responses import RedirectResponse, Response

from fedpact.hub.blobstore import (
    BlobStore,
    BlobStoreError,
    DirectPart,
    StoredBlob,
    check_sha,
    redact,
)

READ = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024)
DOWNLOAD_URL_TTL_S = 3600


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload", "NoSuchBucket")


class S3BlobStore(BlobStore):
    kind = "s3"
    presigns = True

    def __init__(
        self,
        bucket: str,
        uploads_dir: Path,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        public_endpoint: str | None = None,
    ) -> None:
        super().__init__(uploads_dir)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region or "us-east-1"
        )
        cfg = Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 5})
        self.s3: Any = session.client("s3", endpoint_url=endpoint, config=cfg)
        self.signer: Any = (
            session.client("s3", endpoint_url=public_endpoint, config=cfg) if public_endpoint else self.s3
        )
        # Health checks must answer within the load balancer's check interval: no retries.
        probe_cfg = Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1},
            connect_timeout=2, read_timeout=2,
        )
        self._probe: Any = session.client("s3", endpoint_url=endpoint, config=probe_cfg)
        self._ensure_bucket()

    @classmethod
    def from_url(cls, url: str, uploads_dir: Path) -> S3BlobStore:
        parts = urlsplit(url)
        if not parts.netloc:
            raise BlobStoreError(f"an S3 blob store URL is s3://BUCKET[/PREFIX]?endpoint=..., not {redact(url)!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {"endpoint", "region", "access_key", "secret_key", "public_endpoint"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise BlobStoreError(f"unknown S3 blob store option(s) {unknown}; known: {sorted(known)}")
        if ("access_key" in query) != ("secret_key" in query):
            raise BlobStoreError("give both access_key and secret_key in the S3 URL, or neither (AWS variables then)")
        return cls(
            parts.netloc,
            uploads_dir,
            prefix=parts.path,
            endpoint=query.get("endpoint"),
            region=query.get("region"),
            access_key=query.get("access_key"),
            secret_key=query.get("secret_key"),
            public_endpoint=query.get("public_endpoint"),
        )

    def _ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _missing(exc):
                raise
            self.s3.create_bucket(Bucket=self.bucket)

    def problem(self) -> str | None:
        try:
            self._probe.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - any failure is what health reports
            return f"bucket {self.bucket!r} unreachable: {type(exc).__name__}: {str(exc)[:200]}"
        return None

    def _key(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{check_sha(sha256)}"

    def _upload_key(self, upload_id: str) -> str:
        self.partial_path(upload_id)  # validates the id
        return f"{self.prefix}uploads/{upload_id}"

    # -- finished blobs -----------------------------------------------------------------
    def size(self, sha256: str) -> int | None:
        try:
            return int(self.s3.head_object(Bucket=self.bucket, Key=self._key(sha256))["ContentLength"])
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        return self.size(sha256) is not None

    def put_file(self, sha256: str, path: Path) -> None:
        try:
            if not self.exists(sha256):
                self.s3.upload_file(str(path), self.bucket, self._key(sha256), Config=TRANSFER)
        finally:
            path.unlink(missing_ok=True)

    def prepare(self, upload_id: str, sha256: str) -> None:
        if not self.exists(sha256):
            self.s3.upload_file(str(self.partial_path(upload_id)), self.bucket, self._key(sha256), Config=TRANSFER)

    def read_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        kw: dict[str, Any] = {}
        if start or end is not None:
            if end is not None and end <= start:
                return
            kw["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        body = self.s3.get_object(Bucket=self.bucket, Key=self._key(sha256), **kw)["Body"]
        try:
            yield from body.iter_chunks(READ)
        finally:
            body.close()

    def delete(self, sha256: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(sha256))

    def iter_blobs(self) -> Iterator[StoredBlob]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/")
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                try:
                    check_sha(name)
                except ValueError:
                    continue
                yield StoredBlob(name, int(obj["Size"]), obj["LastModified"].timestamp())

    def presigned_get(self, sha256: str, expires_s: int, filename: str | None = None) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(sha256)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
        return url

    def download(self, sha256: str, *, filename: str | None = None, headers: dict[str, str] | None = None) -> Response:
        url = self.presigned_get(sha256, DOWNLOAD_URL_TTL_S, filename)
        assert url is not None
        return RedirectResponse(url, status_code=307, headers=headers)

    # -- direct uploads -------------------------------------------------------------------
    def _multipart_id(self, upload_id: str) -> str | None:
        key = self._upload_key(upload_id)
        found = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=key).get("Uploads", [])
        ids = [u["UploadId"] for u in found if u["Key"] == key]
        return ids[0] if ids else None

    def direct_upload_start(self, upload_id: str, size: int, part_size: int) -> None:
        if self._multipart_id(upload_id) is None:
            self.s3.create_multipart_upload(Bucket=self.bucket, Key=self._upload_key(upload_id))

    def _require_multipart(self, upload_id: str) -> str:
        mp = self._multipart_id(upload_id)
        if mp is None:
            raise FileNotFoundError(f"direct upload {upload_id} has no multipart upload in the bucket")
        return mp

    def direct_upload_parts(self, upload_id: str, size: int, part_size: int, expires_s: int) -> list[DirectPart]:
        mp = self._require_multipart(upload_id)
        key = self._upload_key(upload_id)
        out = []
        for i in range(max(1, math.ceil(size / part_size))):
            url = self.signer.generate_presigned_url(
                "upload_part",
                Params={"Bucket": self.bucket, "Key": key, "UploadId": mp, "PartNumber": i + 1},
                ExpiresIn=expires_s,
            )
            offset = i * part_size
            out.append(DirectPart(number=i + 1, offset=offset, size=min(part_size, size - offset), url=url))
        return out

    def _parts(self, upload_id: str, mp: str) -> dict[int, dict[str, Any]]:
        key = self._upload_key(upload_id)
        parts: dict[int, dict[str, Any]] = {}
        pages = self.s3.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key, UploadId=mp)
        for page in pages:
            for p in page.get("Parts", []):
                parts[int(p["PartNumber"])] = p
        return parts

    def direct_upload_received(self, upload_id: str, size: int, part_size: int) -> int:
        """Bytes landed without a gap from the start: whole parts of the expected size, in order."""
        parts = self._parts(upload_id, self._require_multipart(upload_id))
        offset = 0
        number = 1
        while offset < size:
            expected = min(part_size, size - offset)
            p = parts.get(number)
            if p is None or int(p["Size"]) != expected:
                break
            offset += expected
            number += 1
        return offset

    def direct_upload_finish(self, upload_id: str, sha256: str, size: int) -> tuple[int, str | None]:
        mp = self._require_multipart(upload_id)
        key = self._upload_key(upload_id)
        parts = self._parts(upload_id, mp)
        listed = [{"PartNumber": n, "ETag": parts[n]["ETag"]} for n in sorted(parts)]
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=mp, MultipartUpload={"Parts": listed}
        )
        try:
            landed = int(self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
            if landed != size:
                return landed, None
            digest = hashlib.sha256()
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            for block in body.iter_chunks(READ):
                digest.update(block)
            actual = digest.hexdigest()
            if actual == sha256 and not self.exists(sha256):
                self.s3.copy(
                    {"Bucket": self.bucket, "Key": key}, self.bucket, self._key(sha256), Config=TRANSFER
                )
            return landed, actual
        finally:
            self.s3.delete_object(Bucket=self.bucket, Key=key)

    def direct_upload_abort(self, upload_id: str) -> None:
        mp = self._multipart_id(upload_id)
        if mp is not None:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self._upload_key(upload_id), UploadId=mp)
            except ClientError as exc:
                if not _missing(exc):
                    raise

    def stale_direct_uploads(self, older_than: float) -> Iterator[str]:
        found = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=f"{self.prefix}uploads/").get("Uploads", [])
        for u in found:
            if u["Initiated"].timestamp() < older_than:
                yield u["Key"].rsplit("/", 1)[-1]
