"""Source connectors: one package per source, each implementing the connector contract
(:mod:`ragstream.connector`) with the same file shape — ``__init__.py`` declares
``CONNECTOR``, ``source.py`` implements it. ``extract.py`` is shared text extraction."""
