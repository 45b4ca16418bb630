"""The kernel, firewall and Docker side: host and runner planes over idempotent `ensure_*`
operations (netlink, iptables and firewalld, Docker networks, sysctls), the probe and cleanup.

Builds on `model` only and never imports the record: planes return what they changed and what
they adopted, and the control layer decides what to record.
"""
