"""Editing the plan in Slack: targets, a KPI's owner, names and thresholds, departments."""
