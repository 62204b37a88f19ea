"""Sinks that apply stage output to stores: Milvus (the index), later the knowledge graph and audit archive."""
