"""Cluster operations (multi-node Ray clusters, node loss, rebalancing): to come."""
