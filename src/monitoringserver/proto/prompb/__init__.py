"""Vendored Prometheus remote-write protobuf messages (``remote.proto``) and generated code."""
