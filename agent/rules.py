"""The numbering rules the agent follows, as the coordinator last told them."""

from __future__ import annotations

from typing import Any

from agent.whmcs.queries import DueRules


class RulesHolder:
    """Series settings arrive with every heartbeat reply; the loops read the latest."""

    def __init__(self, credit_note_rule: str) -> None:
        self._credit_note_rule = credit_note_rule
        self.current = DueRules("payment", "payment", credit_note_rule)
        self.known = False

    def update(self, series: dict[str, Any]) -> None:
        self.current = DueRules(
            invoice_on=series["invoice"]["assign_on"],
            creditnote_on=series["creditnote"]["assign_on"],
            credit_note_rule=self._credit_note_rule,
        )
        self.known = True
