"""Homeserver benchmark harness: drives any homeserver through the public Client-Server API.

    python -m bench.hs                      # Axon (embedded) and Synapse side by side
    python -m bench.hs --target URL --pid N # any running homeserver

See bench/README.md for the scenarios and how to read the table.
"""
