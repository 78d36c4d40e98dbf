"""CSV files of actuals sent to kpibot in a DM: preview, then Save or Cancel."""
