"""The join protocol: messages (the same pydantic models in both directions), framing, the
authenticated channel, the client a runner or a remote TUI uses, and the cluster token.

Builds on `model` only; it knows nothing of the record or the kernel.
"""
