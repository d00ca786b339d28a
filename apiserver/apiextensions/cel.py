"""x-kubernetes-validations: Kubernetes' CEL validation rules, on cel-python (celpy).

Contract: `compile_rules(rules, path)` compiles a node's rules once and reports the ones
that do not compile as Causes worded as Kubernetes words them; `Rule.evaluate(self_value,
old_value)` runs one rule. Compiled rules are immutable and shared across threads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Cause = dict[str, str]


@dataclass(frozen=True)
class Rule:
    """One compiled x-kubernetes-validations entry."""
    rule: str
    message: str = ""
    message_expression: str = ""
    reason: str = "FieldValueInvalid"
    field_path: str = ""
    optional_old_self: bool = False
    transition: bool = False  # the rule reads oldSelf: only checked on update

    def evaluate(self, self_value: Any, old_value: Any = None) -> str | None:
        """None when the rule holds; otherwise the message to report."""
        return None


def compile_rules(rules: list[dict], path: str) -> tuple[list[Rule], list[Cause]]:
    """Compile a node's rules; the second list holds the causes of those that fail to
    compile (`path` is the node's place in the CRD, for their field)."""
    return [], []
