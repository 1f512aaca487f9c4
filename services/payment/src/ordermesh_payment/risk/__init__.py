"""Payment risk scoring: the event log it learns from, one feature definition for online
and offline, the models and their artifacts. See docs/risk.md."""
