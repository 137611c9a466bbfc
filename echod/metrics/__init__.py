"""
The Prometheus metrics: the collector reading echod's counters, and the bounded endpoint
that serves them.
"""
