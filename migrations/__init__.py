"""Package data: installed as `bot.migrations` (pyproject.toml); found through bot/resources.py."""
