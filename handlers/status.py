"""`/kpi list` and `/kpi status [department]`. (Being built: see issue 3.)"""

from __future__ import annotations
