"""The control plane: the host's join service (listener, one session per connection, status
answers) and the runner's agent, which tie the protocol, the record and the data plane together.

The only layer that both writes the record and drives the data plane: it records the events the
data plane reports.
"""
