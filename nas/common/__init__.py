"""The bottom layer: small utilities every other package may use (atomic writes, typed configs,
failpoints). It imports nothing of the project."""
