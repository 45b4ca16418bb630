"""Values and pure rules: settings values, the address plan, allocation policy, records, the
state a node reads back, and which settings must match between host and runners.

No I/O and nothing of krnet but `krnet.errors`: everything here is tested without root.
"""
