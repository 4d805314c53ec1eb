"""Reports: statistics, tables, figures and reproduction targets, built from records alone (no torch)."""
