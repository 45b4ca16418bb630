"""krnet: the VXLAN overlay network of a Host + Runners container cluster."""

__version__ = "0.1.0"
