"""Change-detection producers (one module per source) and the one shared publisher."""
