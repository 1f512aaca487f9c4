"""Messaging plumbing shared by the services: the transactional outbox and its events."""
