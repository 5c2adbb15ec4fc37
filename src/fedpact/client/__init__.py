"""Talking to a hub over HTTP: the one client every other part uses."""

from fedpact.client.hub import BlobGone, HubCertificateError, HubClient, HubError, HubUnreachable

__all__ = ["BlobGone", "HubCertificateError", "HubClient", "HubError", "HubUnreachable"]
