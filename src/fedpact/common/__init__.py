"""Pieces shared by every part of fedpact: the task definition and the tensor wire format.

Nothing here imports the hub, the client or any training code, so every other package may
depend on it.
"""
