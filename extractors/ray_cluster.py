"""What the Ray engines (features: ``ray_engine``; tuning: ``regressors.task_pool``) ask of the
cluster: Ray itself, its live nodes, what each node can hold, and whether a node is gone."""
from __future__ import annotations

import socket
from typing import Any

INSTALL_HINT = "--engine ray needs Ray: pip install 'aigc-quality[ray]' (or: pip install 'ray>=2.9')"
#: seconds a node's raylet has to accept a connection before the node counts as lost
ANSWER_S = 2.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    return ray


def alive_nodes(ray) -> dict[str, dict[str, Any]]:
    """{node id: Ray's record of it} for the nodes Ray holds alive."""
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def node_capacity(nodes, opts: dict[str, float]) -> dict[str, int]:
    """Actors of resources ``opts`` (num_cpus, num_gpus) each node can hold, node by node; never the
    cluster's total divided by an actor's needs (3 CPUs + 1 CPU hold one 2-CPU actor, not two)."""
    need = {"CPU": opts.get("num_cpus", 0), "GPU": opts.get("num_gpus", 0)}
    return {n["NodeID"]: min(int(n["Resources"].get(r, 0) / q + 1e-9) for r, q in need.items() if q) for n in nodes}


def answers(node: dict[str, Any], timeout: float = ANSWER_S) -> bool:
    """Whether the node's raylet accepts a connection. Ray declares a node dead only after its health
    checks fail for a while (~15-30 s); a worker lost with its node must be told apart from a lost
    process at once, to say what happened and to start no replacement there."""
    try:
        with socket.create_connection((node["NodeManagerAddress"], int(node["NodeManagerPort"])), timeout=timeout):
            return True
    except (OSError, KeyError, ValueError):
        return False


def gone(ray, nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Of ``nodes`` ({id: record}), those Ray holds dead or whose raylet does not answer: {id: "address (id xxxxxxxx)"}."""
    alive = alive_nodes(ray)
    return {i: describe(n) for i, n in nodes.items() if i not in alive or not answers(n)}


def describe(node: dict[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')} (id {node['NodeID'][:8]})"
