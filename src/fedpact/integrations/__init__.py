"""Bridges to tools people already use around fedpact (experiment trackers); each needs its extra."""
