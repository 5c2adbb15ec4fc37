"""Talking to a hub over HTTP: the one client every other part uses."""

from fedpact.client.hub import HubCertificateError, HubClient, HubError, HubUnreachable

__all__ = ["HubCertificateError", "HubClient", "HubError", "HubUnreachable"]
