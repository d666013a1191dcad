"""Step `report`: report.json and report.md, tables, plots, experiment trackers."""
