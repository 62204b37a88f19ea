"""The local stack (Kafka from Maven Central jars, milvus-lite server) and deployment assets."""
