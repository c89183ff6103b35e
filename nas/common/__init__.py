"""The bottom layer: small utilities every other package may use. It imports nothing of the project.

* `atomic`: files replaced atomically;
* `config`: typed configs (YAML/JSON <-> frozen dataclasses) and the guarded reader of a mapping file;
* `errors`: `UserError`, the one error type for bad input, and one-line messages;
* `faults`: failpoints for the crash tests;
* `jsonutil`: values made ready for JSON (no NaN) and the JSON file writer;
* `text`: reading a user's text file.
"""
