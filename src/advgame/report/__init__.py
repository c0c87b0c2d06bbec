"""The report stage's library: reports/report.md, reports/results.json, the figures and the headline metrics, all read from the evaluation's files."""
