"""The per-shard numpy engine: forward cache, backward passes, block assembly,
curvature-vector products and Taylor propagation.  Entry point: :mod:`.sums`."""
