"""Talking to a hub over HTTP: the one client every other part uses."""

from fedpact.client.hub import HubClient, HubError, HubUnreachable

__all__ = ["HubClient", "HubError", "HubUnreachable"]
