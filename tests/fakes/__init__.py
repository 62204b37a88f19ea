"""Local stand-ins for services that cannot be reached from here, each shaped by the
service's documented API and driven by the real client library."""
