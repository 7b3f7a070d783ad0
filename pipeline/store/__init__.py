"""The store: versions, runs, gc and lineage under one storage root."""
