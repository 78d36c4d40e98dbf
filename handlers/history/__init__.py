"""`/kpi history <kpi> [period]`: where each value of a KPI came from."""
