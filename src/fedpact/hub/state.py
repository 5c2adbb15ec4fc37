"""What every request handler needs from its app, reachable from the request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from fastapi import Request

from fedpact.hub.blobcache import BlobCache
from fedpact.hub.blobgc import Collector
from fedpact.hub.blobstore import BlobStore
from fedpact.hub.config import HubConfig
from fedpact.hub.db import Database
from fedpact.hub.metrics import HubMetrics
from fedpact.hub.notify import Notifier
from fedpact.hub.passwords import HashPool
from fedpact.hub.throttle import Throttle
from fedpact.hub.tokens import TokenCache


@dataclass
class HubState:
    config: HubConfig
    db: Database
    store: BlobStore
    notifier: Notifier
    hasher: PasswordHasher
    hash_pool: HashPool
    #: Failed logins and registrations, per user name and per client address.
    throttle: Throttle
    #: Reclaims unreferenced blobs periodically and when a task ends (hub.blobgc).
    gc: Collector
    #: Uploads a request is writing to right now; only touched on the event loop's thread.
    busy_uploads: set[str] = field(default_factory=set)
    metrics: HubMetrics = field(default_factory=HubMetrics)
    #: Recently verified tokens (see hub.tokens); holds auth.Principal values.
    tokens: TokenCache[Any] = field(default_factory=TokenCache)
    #: Recent small blobs (broadcasts, updates) served from memory (see hub.blobcache).
    blob_cache: BlobCache = field(default_factory=BlobCache)


async def get_state(request: Request) -> HubState:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, one hop per request."""
    state: HubState = request.app.state.hub
    return state
