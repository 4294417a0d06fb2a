"""The sandbox's server: a folder run by path, ``python -s -P aimo/sandbox/_server`` (see
``__main__.py``), never imported as a package then. This file only lets the client import
``aimo.sandbox._server.sbx_protocol``, the one module the two sides share.
"""
