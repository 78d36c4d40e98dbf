"""Package data: installed as `bot.templates` (pyproject.toml); found through bot/resources.py."""
