"""Count the lines of each algorithm's ``plan`` function and of its whole file.

"all" counts every line from ``def plan`` to the function's last line; "code" leaves out blank
lines, comment-only lines and docstrings. Helpers are the module's own top-level classes and
functions that ``plan`` refers to by name (PPO's ``UpdateKL``), counted the same way. The Ray 1.0
figures are those of ``execution_plan`` in ``rllib/agents/*`` (see docs/algorithms.md).

Usage::

    python benchmarks/count_plan_lines.py             # a text table
    python benchmarks/count_plan_lines.py --markdown  # the table of docs/algorithms.md
"""

from __future__ import annotations

import argparse
import ast
import importlib
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: plan lines (all / code) of the Ray RLlib 1.0 execution plans (docs/REFERENCE table), and
#: the lines of the helpers outside the plan that the table names (all lines only); None:
#: Ray 1.0's version had no execution plan (ES and ARS were imperative ``_train`` loops).
RAY_1_0 = {"pg": (14, 7, 0), "a2c": (25, 18, 0), "a3c": (9, 4, 0), "ppo": (51, 30, 0),
           "dqn": (64, 45, 0), "apex": (98, 71, 23), "impala": (36, 24, 68),
           "appo": (36, 24, 68), "composite": (55, 44, 0), "ppo_and_dqn": (55, 44, 0),
           # Ray 1.0's SAC, DDPG and TD3 trainers were GenericOffPolicyTrainer: DQN's plan
           "sac": (64, 45, 0), "es": None, "ars": None,
           # Ray 1.0's APEX_DDPG ran Ape-X DQN's execution_plan
           "apex_ddpg": (98, 71, 23),
           # RLlib 1.0 had no CQL (it came in a later 1.x release): no figure to compare
           "cql": "absent"}
#: name -> (module or file path, plan function)
ALGORITHMS = {name: (f"rldataflow.algorithms.{name}", "plan")
              for name in ("pg", "a2c", "a3c", "ppo", "dqn", "apex", "impala", "appo",
                           "composite", "sac", "es", "ars", "apex_ddpg", "cql")}
ALGORITHMS["ppo_and_dqn"] = ("examples/ppo_and_dqn.py", "ppo_and_dqn_plan")
ALGORITHMS["ddppo"] = ("rldataflow.algorithms.ddppo", "plan")
# RLlib 1.x's DD-PPO execution_plan (rllib/agents/ppo/ddppo.py as stored at ray commit
# 07cae7c, counted by hand the same way); its worker-side helpers lived in RolloutWorker
RAY_1_0["ddppo"] = (108, 72, 0)
# multi-agent (Ray 1.0's QMIX had no execution plan of its own; MADDPG was a contrib trainer)
ALGORITHMS["qmix"] = ("rldataflow.algorithms.qmix", "plan")
ALGORITHMS["maddpg"] = ("rldataflow.algorithms.maddpg", "plan")
# MAML: Ray 1.0's MAML execution plan is not counted here (no verified copy of that version),
# so its Ray column reads "not counted"
ALGORITHMS["maml"] = ("rldataflow.algorithms.maml", "plan")
# R2D2 is not in Ray 1.0: no figure to compare
ALGORITHMS["r2d2"] = ("rldataflow.algorithms.r2d2", "plan")
RAY_1_0["r2d2"] = "absent"
ROOT = Path(__file__).resolve().parents[1]

_NON_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
             tokenize.ENDMARKER, tokenize.ENCODING}


@dataclass
class Count:
    all: int
    code: int


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def _code_lines(source: str, tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _NON_CODE:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines - _docstring_lines(tree)


def _span(node: ast.AST) -> range:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return range(first, node.end_lineno + 1)


def count(name: str) -> dict[str, Any]:
    """Line counts of ``plan``, its helpers and the whole file of algorithm ``name``."""
    where, plan_name = ALGORITHMS[name]
    if where.endswith(".py"):
        path = ROOT / where
    else:
        path = Path(importlib.import_module(where).__file__)
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    code = _code_lines(source, tree)
    top = {n.name: n for n in tree.body
           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    plan = top[plan_name]
    # helpers: the module's own definitions reached from plan's body, transitively
    # (annotations are not walked, so `config: Config` does not count the Config class)
    found: set[str] = set()
    todo = [plan]
    while todo:
        node = todo.pop()
        for stmt in node.body:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Name) and n.id in top and n.id not in found | {plan_name}:
                    found.add(n.id)
                    todo.append(top[n.id])
    helpers = [top[n] for n in sorted(found)]
    plan_span = _span(plan)
    helper_lines = [line for h in helpers for line in _span(h)]
    return {
        "plan": Count(len(plan_span), len(code & set(plan_span))),
        "helpers": Count(len(helper_lines), len(code & set(helper_lines))),
        "file": Count(len(source.splitlines()), len(code)),
        "helper_names": [h.name for h in helpers],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    header = ("algorithm", "plan all/code", "helpers", "plan + helpers all/code",
              "file all/code", "Ray 1.0 plan all/code (+helpers)", "code ours/Ray plan")
    rows = []
    for name in ALGORITHMS:
        c = count(name)
        both = Count(c["plan"].all + c["helpers"].all, c["plan"].code + c["helpers"].code)
        if name not in RAY_1_0:  # no Ray 1.0 plan counted for it
            ray_cell, ratio = "- (not counted)", "-"
        elif RAY_1_0[name] is None:  # ES / ARS were imperative in Ray 1.0 (no execution plan)
            ray_cell, ratio = "- (imperative)", "-"
        elif RAY_1_0[name] == "absent":
            ray_cell, ratio = "- (not in Ray 1.0)", "-"
        else:
            ray_all, ray_code, ray_helpers = RAY_1_0[name]
            ray_cell = f"{ray_all} / {ray_code}" + (f" (+{ray_helpers})" if ray_helpers else "")
            ratio = f"{both.code / ray_code:.2f}"
        rows.append((name, f"{c['plan'].all} / {c['plan'].code}",
                     ", ".join(c["helper_names"]) or "-",
                     f"{both.all} / {both.code}",
                     f"{c['file'].all} / {c['file'].code}", ray_cell, ratio))
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
