"""The export's optimiser: onnxscript's, its multi-output rewrite rules left out while the
network is exported (worker/export.py). The exported network itself is proven against
torch's logits in tests/worker/test_engines.py."""

from __future__ import annotations

import onnx_ir as ir
import onnxscript
import pytest
from onnx import TensorProto, helper
from onnxscript import rewriter

from worker.export import multi_output_rewrites_left_out, single_output_rules


def two_halves_model() -> ir.Model:
    """A graph that `SlicesSplit`, a multi-output rule, rewrites: one input's last axis
    sliced into its two halves, which a Split can make in one node."""
    constants = [
        helper.make_tensor(name, TensorProto.INT64, [1], [value])
        for name, value in (("zero", 0), ("half", 4), ("whole", 8), ("last", 1))
    ]
    graph = helper.make_graph(
        [
            # In this order: the rule pairs a Slice with the first Slice of the graph
            # that matches its pattern, itself included, and then checks that pair only.
            helper.make_node("Slice", ["x", "half", "whole", "last"], ["second"]),
            helper.make_node("Slice", ["x", "zero", "half", "last"], ["first"]),
        ],
        "halves",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [
            helper.make_tensor_value_info("first", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("second", TensorProto.FLOAT, [2, 4]),
        ],
        initializer=constants,
    )
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def optimised_op_types(model: ir.Model) -> list[str]:
    onnxscript.optimizer.optimize_ir(model)
    return sorted(node.op_type for node in model.graph)


def test_the_optimiser_while_exporting_skips_the_multi_output_rules_only_and_gets_them_back():
    every_rule = rewriter._DEFAULT_REWRITE_RULES
    multi_output = [rule for rule in every_rule if rule not in single_output_rules(every_rule)]
    with multi_output_rewrites_left_out():
        kept = rewriter._DEFAULT_REWRITE_RULES
        halves_while_exporting = optimised_op_types(two_halves_model())
    assert [rule.name for rule in multi_output] == ["SlicesSplit"]
    assert kept == tuple(rule for rule in every_rule if rule not in multi_output)
    assert halves_while_exporting == ["Slice", "Slice"], "the slow rule ran while exporting"
    assert rewriter._DEFAULT_REWRITE_RULES is every_rule
    assert optimised_op_types(two_halves_model()) == ["Split"], "the rule is back afterwards"


def test_the_rules_come_back_when_the_export_fails():
    every_rule = rewriter._DEFAULT_REWRITE_RULES
    with pytest.raises(RuntimeError, match="export failed"), multi_output_rewrites_left_out():
        raise RuntimeError("export failed")
    assert rewriter._DEFAULT_REWRITE_RULES is every_rule
