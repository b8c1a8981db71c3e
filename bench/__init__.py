"""``make bench``: Envoy, the sidecar (no-op and real), PostgreSQL and a fast upstream, driven by wrk.

Modules: ``webhooks`` (the requests sent and the directory they resolve against), ``stack`` (the
processes), ``load`` (wrk, closed loop and paced), ``cpu`` (/proc accounting), ``scenarios``,
``run`` (the whole run), ``report`` (JSON, Markdown, chart), ``directory_scale`` (lookup cost
against directory size). Performance is reported, never asserted.
"""
