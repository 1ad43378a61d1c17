"""A request's budget parameters: numbers taken, anything else named with what was sent."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2

from ganglion.runtime.serving.client import _parameter as set_parameter
from ganglion.runtime.serving.ensemble_request import request_budgets
from ganglion.runtime.serving.kserve_tensors import WireError


def _parameters(**values: object) -> dict:
    """The request's parameters as our client sets them (each by its Python type)."""
    request = service_pb2.ModelInferRequest()
    for key, value in values.items():
        set_parameter(request.parameters[key], value)
    return request.parameters


def test_numbers_are_taken_and_missing_ones_default() -> None:
    assert request_budgets(_parameters(energy_budget_j=0.5), 1.0, 20.0) == (0.5, 20.0)
    assert request_budgets(_parameters(latency_budget_ms=7), 1.0, 20.0) == (1.0, 7.0)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("abc", "got string 'abc'"), (True, "got bool True"), ("x" * 100, "got string 'xxx")],
)
def test_a_budget_that_is_not_a_number_is_named_with_what_was_sent(value, shown) -> None:
    with pytest.raises(WireError, match="parameter energy_budget_j must be a number") as refused:
        request_budgets(_parameters(energy_budget_j=value), 1.0, 20.0)
    assert shown in str(refused.value) and len(str(refused.value)) < 120
