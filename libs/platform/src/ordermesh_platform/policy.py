"""Authorization as data: each service declares one table, RPC -> rule, next to its
servicer; the auth interceptor applies it before the handler runs. An RPC missing from
the table is refused (fail closed), and a test checks every table is complete.

Rules see the principal and the request message (read by field path, so no gRPC and
no service types here). Checks that need stored state, such as who owns an order, are
made by the use case that loads it (``auth.require_owner``); their rule says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_platform.auth import ADMIN_SCOPE, Principal
from ordermesh_platform.errors import PermissionDenied


class Rule(Protocol):
    def check(self, principal: Principal, request: Any) -> ErrorReason.ValueType | None:
        """None when allowed; otherwise the ErrorInfo reason of the refusal."""

    def describe(self) -> str: ...


@dataclass(frozen=True)
class AnyCaller:
    """Any authenticated caller (a customer, an operator, a service)."""

    def check(self, principal: Principal, request: Any) -> ErrorReason.ValueType | None:
        return None

    def describe(self) -> str:
        return "any authenticated caller"


@dataclass(frozen=True)
class Admin:
    """Callers whose token carries the admin scope."""

    def check(self, principal: Principal, request: Any) -> ErrorReason.ValueType | None:
        return None if principal.is_admin else ErrorReason.ADMIN_REQUIRED

    def describe(self) -> str:
        return f"scope {ADMIN_SCOPE}"


@dataclass(frozen=True)
class ServiceOrAdmin:
    """The named ordermesh services (by client certificate), or an administrator."""

    services: tuple[str, ...]

    def check(self, principal: Principal, request: Any) -> ErrorReason.ValueType | None:
        if principal.is_service(*self.services) or principal.is_admin:
            return None
        return ErrorReason.SERVICE_ONLY

    def describe(self) -> str:
        names = ", ".join(f"{s}-service" for s in self.services)
        return f"{names} (certificate), or scope {ADMIN_SCOPE}"


@dataclass(frozen=True)
class CustomerInRequest:
    """The customer the request names (``field``, a dotted path) is the caller, or the
    caller is an administrator."""

    field: str

    def check(self, principal: Principal, request: Any) -> ErrorReason.ValueType | None:
        value: Any = request
        for part in self.field.split("."):
            value = getattr(value, part)
        return None if principal.owns(str(value)) else ErrorReason.NOT_OWNER

    def describe(self) -> str:
        return f"the customer named by `{self.field}` (token subject), or scope {ADMIN_SCOPE}"


@dataclass(frozen=True)
class OwnerOfResource:
    """Any authenticated caller here; the use case then refuses anyone but the owner of
    the resource it loads (or an administrator)."""

    resource: str

    def check(self, principal: Principal, request: Any) -> ErrorReason.ValueType | None:
        return None

    def describe(self) -> str:
        return f"the {self.resource}'s customer (checked by the use case), or scope {ADMIN_SCOPE}"


class Policy:
    """One service's table. Keys are RPC method names (``PlaceOrder``) of ``service``
    (its full gRPC name)."""

    def __init__(self, service: str, rules: Mapping[str, Rule]) -> None:
        self.service = service
        self.rules = dict(rules)
        self._by_path = {f"/{service}/{name}": rule for name, rule in rules.items()}

    def rule_for(self, method: str) -> Rule | None:
        """``method`` is the full path gRPC gives: /package.Service/Method."""
        return self._by_path.get(method)

    def authorize(self, method: str, principal: Principal, request: Any) -> None:
        rule = self.rule_for(method)
        if rule is None:
            raise PermissionDenied(
                ErrorReason.NO_POLICY, "no rule allows this method", {"method": method}
            )
        reason = rule.check(principal, request)
        if reason is not None:
            raise PermissionDenied(
                reason, f"not allowed: {method.rsplit('/', 1)[-1]} needs {rule.describe()}",
                {"method": method},
            )  # fmt: skip
