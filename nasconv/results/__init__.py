"""The results: the results folder, its plots, the report and the export."""
