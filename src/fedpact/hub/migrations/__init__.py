"""Alembic migrations of the hub's database; ``fedpact.hub.db`` runs them when a hub starts.

Each change to ``fedpact.hub.tables`` comes with a new script in ``versions/`` (write it
with ``alembic -c src/fedpact/hub/migrations/alembic.ini revision --autogenerate -m ...``
against a database at head, then read and fix it). The baseline, ``0001``, is the schema
of the hubs deployed before migrations existed; such a database is stamped at the
baseline when first opened and upgraded from there.
"""
