"""The ``himnet`` command: the dispatcher above ``training/``, ``studies/`` and ``replay/``."""
