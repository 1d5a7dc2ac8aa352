"""Everything that follows the event log: read models, the generation worker, rebuilds."""
