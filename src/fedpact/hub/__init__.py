"""The hub: the one server every party talks to over HTTP.

It stores users, tasks, messages, blobs, rounds and models, and relays messages between a
task's aggregator and its participants. It never imports training code and never
interprets a payload, so a hostile update can at worst be refused, never executed here.
"""

from __future__ import annotations

from fedpact.hub.app import create_app
from fedpact.hub.config import HubConfig
from fedpact.hub.server import EmbeddedHub, HubProcess, serve

__all__ = ["EmbeddedHub", "HubConfig", "HubProcess", "create_app", "serve"]
