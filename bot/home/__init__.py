"""App Home: what belongs on a person's Home tab (plain data, no Slack)."""
