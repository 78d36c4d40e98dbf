"""App Home in Slack: published on app_home_opened and refreshed when what it shows changes."""
