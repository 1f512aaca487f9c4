"""Shared plumbing of every ordermesh service: settings, logs, errors, database, gRPC."""
