"""Showing a plan: an indented text tree, Graphviz DOT, or a Mermaid flowchart.

Every node knows its name, the plan line that created it and its parents, so the plan a user
wrote can be printed back as the dataflow it is (outermost operator first).
"""

from __future__ import annotations

from typing import Any


def _label(node: Any) -> str:
    from rldataflow.flow.parallel_iterator import ParallelIterator

    text = node.name
    if isinstance(node, ParallelIterator):
        names = ", ".join(a.name for a in node.actors()[:4])
        more = "" if node.num_shards() <= 4 else ", ..."
        text += f" [{node.num_shards()} shards: {names}{more}; {node.runtime.name} runtime]"
    return text


def describe(root: Any) -> str:
    """Text tree of the plan feeding ``root``; each line is ``name  @ file:line``."""
    lines: list[str] = []
    seen: set[int] = set()

    def walk(node: Any, prefix: str, child_prefix: str) -> None:
        site = f"  @ {node.site}" if getattr(node, "site", None) else ""
        again = " (shown above)" if id(node) in seen else ""
        lines.append(f"{prefix}{_label(node)}{site}{again}")
        if again:
            return
        seen.add(id(node))
        parents = list(getattr(node, "parents", []))
        for i, parent in enumerate(parents):
            last = i == len(parents) - 1
            walk(parent, child_prefix + ("└─ " if last else "├─ "),
                 child_prefix + ("   " if last else "│  "))

    walk(root, "", "")
    return "\n".join(lines)


def _graph(root: Any) -> tuple[list[tuple[int, str]], list[tuple[int, int]]]:
    nodes: dict[int, str] = {}
    edges: list[tuple[int, int]] = []
    stack = [root]
    ids: dict[int, int] = {}
    while stack:
        node = stack.pop()
        if id(node) in ids:
            continue
        ids[id(node)] = len(ids)
        site = getattr(node, "site", "")
        nodes[ids[id(node)]] = f"{_label(node)}\\n{site}" if site else _label(node)
        stack.extend(getattr(node, "parents", []))
    stack = [root]
    done: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in done:
            continue
        done.add(id(node))
        for parent in getattr(node, "parents", []):
            edges.append((ids[id(parent)], ids[id(node)]))
            stack.append(parent)
    return sorted(nodes.items()), edges


def to_dot(root: Any) -> str:
    """The plan as Graphviz DOT (data flows along the arrows)."""
    nodes, edges = _graph(root)
    out = ["digraph plan {", "  rankdir=TB;", "  node [shape=box, fontname=monospace];"]
    for i, label in nodes:
        out.append(f'  n{i} [label="{label.replace(chr(34), chr(39))}"];')
    for a, b in edges:
        out.append(f"  n{a} -> n{b};")
    out.append("}")
    return "\n".join(out)


def to_mermaid(root: Any) -> str:
    """The plan as a Mermaid flowchart (paste into any Markdown that renders Mermaid)."""
    nodes, edges = _graph(root)
    out = ["flowchart TB"]
    for i, label in nodes:
        safe = label.replace('"', "'").replace("\\n", "<br/>")
        out.append(f'  n{i}["{safe}"]')
    for a, b in edges:
        out.append(f"  n{a} --> n{b}")
    return "\n".join(out)
