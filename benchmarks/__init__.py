"""Speed measurements of the companion, reported as ratios measured in one run (A and B alternating)."""
