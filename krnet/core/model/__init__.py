"""Values and pure rules: settings values, the address plan, allocation policy, records, the
runner's typed report, the state a node reads back and the one-pass `NodeSnapshot` of it (with
its JSON form, which the protocol carries to a remote TUI), and which settings must match.

No I/O and nothing of krnet but `krnet.errors`: everything here is tested without root.
"""
