"""Blob reads that skip the hub: for a client on the hub's own machine.

A colocated aggregator (a hosted one, or one a researcher runs beside an embedded hub)
would otherwise fetch every participant update through the hub's Python process: the
bytes cross loopback once more and the hub spends a request and a 4 MB socket write per
update. With a local blob store it can read the files instead, as an S3 client reads the
object store through a presigned URL.

This route tells a client where the blob directory is and which token its
``.fedpact-store`` file holds; the client reads that file to prove it shares the
filesystem, and from then on opens ``<dir>/<sha[:2]>/<sha>`` itself (and still checks the
sha256). It answers only a logged-in user connecting from a loopback address (after the
proxy headers of a trusted proxy), and only for the local store. Nothing is granted that
the operating system does not already grant: a user who can read the blob directory can
read the hub's database next to it.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from fedpact.common.net import is_loopback
from fedpact.hub.auth import CurrentUser, State
from fedpact.hub.blobstore_local import TOKEN_FILE, LocalBlobStore

router = APIRouter(tags=["blobs"])


class LocalStore(BaseModel):
    """Where a client on the hub's machine finds the blob files, and how it proves it can."""

    blobs_dir: str
    token_file: str
    token: str


@router.get(
    "/blobstore/local",
    response_model=LocalStore,
    responses={404: {"description": "the store is not a local directory, or the caller is not on the hub's machine"}},
)
async def local_store(request: Request, user: CurrentUser, state: State) -> LocalStore:
    """The local blob directory, for a client on this machine (see the module's docstring)."""
    store = state.store
    if not isinstance(store, LocalBlobStore):
        raise HTTPException(404, f"this hub keeps its blobs in a {store.kind} store, not a local directory")
    if not is_loopback(request.client.host if request.client else None):
        raise HTTPException(404, "the blob directory is offered only to clients on the hub's own machine")
    token = await run_in_threadpool(store.local_token)
    return LocalStore(blobs_dir=str(store.blobs_dir.resolve()), token_file=TOKEN_FILE, token=token)
