"""The aggregate's report: statistics (analysis), tables, sections (results.md and report.html)."""
