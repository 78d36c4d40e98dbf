"""Package data: installed as `bot.examples` (pyproject.toml); found through bot/resources.py."""
