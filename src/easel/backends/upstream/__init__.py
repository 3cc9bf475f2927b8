"""Upstream providers: models served through remote APIs, one file per provider on one interface
(`base.Provider`), routed across a model's catalog channels with failover (`routing.py`)."""
