"""Proof under faults: nodes on separate hosts (network namespaces), faults done to them,
clients recording a history, and its checker."""
