"""Proxy tasks: datasets and reduced-fidelity training of one candidate (see issue 3)."""
