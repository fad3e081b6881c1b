"""Generic, culture-agnostic conversation engine: scheduler, limits, backends, log.

Nothing in this package knows about cultures, WVS or fine-tuning; it runs
*conversations* driven by any `TurnPolicy` and single requests, and writes a log.
"""
