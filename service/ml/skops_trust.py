"""What the service trusts in a ``.skops`` file, and the checks that earn the trust of tree node arrays.

A skops file is a zip of a JSON schema and ``.npy`` arrays; loading it builds
only the types it is told to trust, and never unpickles. skops trusts plain
scikit-learn estimators, NumPy and builtin containers by default. It does
not trust ``sklearn.tree._tree.Tree``, the node storage of every decision tree
and tree ensemble, because scikit-learn's C code walks the node arrays
without bounds checks: a child index out of range, a feature index beyond the
input's width, a cycle or a ``max_depth`` smaller than the real depth (shap's
tree explainer sizes its buffers by it) reads or writes outside memory.

The service trusts skops' defaults plus ``Tree`` and nothing else, and trusts
``Tree`` only after checking every tree's arrays, before loading (from the
file's schema and arrays, :func:`check_tree_arrays`) and again after (on the
loaded trees, with the width of the input each estimator checks:
:func:`check_loaded_trees`):

- ``node_count`` equals the length of the node array, ``values`` has one row per node;
- a node's children are both -1 (a leaf) or both later nodes (so no cycle), and every node
  but the root has exactly one parent;
- an internal node's feature is within ``n_features``; ``max_depth`` is the tree's depth.

Any other type skops does not trust (``HistGradientBoosting``'s predictors,
custom classes, functions) is refused: such a model can be served as ONNX.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.ml.unsupported import UnsupportedModel

TREE_TYPE = "sklearn.tree._tree.Tree"
TRUSTED_AFTER_CHECKS = frozenset({TREE_TYPE})
MAX_MEMBERS = 100_000
MAX_UNPACKED_BYTES = 1 << 30  # 1 GiB unpacked, whatever the file's size
MAX_SCHEMA_BYTES = 64 << 20
_COMPOSITES = ("Pipeline", "ColumnTransformer", "FeatureUnion")


def checked_archive(path: Path) -> zipfile.ZipFile:
    """The skops file as a zip whose members and unpacked size are within bounds."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UnsupportedModel(f"{path.name} is not a skops file (a zip archive): {exc}") from None
    members = archive.infolist()
    if len(members) > MAX_MEMBERS or sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
        archive.close()
        raise UnsupportedModel(f"{path.name} unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB or too many files")
    if "schema.json" not in archive.namelist():
        archive.close()
        raise UnsupportedModel(f"{path.name} has no schema.json: it is not a skops file")
    return archive


def trusted_types(path: Path) -> list[str]:
    """The types to trust when loading ``path``: refuses the file unless its only untrusted types are trees
    whose arrays pass :func:`check_tree_arrays`."""
    import skops.io

    with checked_archive(path) as archive:
        if archive.getinfo("schema.json").file_size > MAX_SCHEMA_BYTES:
            raise UnsupportedModel(f"{path.name} has a schema over {MAX_SCHEMA_BYTES >> 20} MiB")
        try:
            schema = json.loads(archive.read("schema.json"))
            untrusted = list(skops.io.get_untrusted_types(file=path))
        except Exception as exc:
            raise UnsupportedModel(f"{path.name} is not a readable skops file: {exc}") from None
        refused = sorted(set(untrusted) - TRUSTED_AFTER_CHECKS)
        if refused:
            raise UnsupportedModel(
                f"{path.name} holds types the service does not trust: {', '.join(refused)} "
                "(served skops models hold scikit-learn estimators and trees only; serve others as ONNX)"
            )
        for number, node in enumerate(_tree_nodes(schema)):
            _check_schema_tree(archive, node, f"{path.name}: tree {number}")
    return untrusted


def _tree_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``Tree`` node of a skops schema (iteratively: a schema may nest deeply)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if current.get("__class__") == "Tree" and current.get("__module__") == "sklearn.tree._tree":
                yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def _json_int(node: Any, where: str) -> int:
    if not isinstance(node, dict) or node.get("__loader__") != "JsonNode":
        raise UnsupportedModel(f"{where} is not stored as a plain number")
    value = json.loads(node["content"])
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsupportedModel(f"{where} is not an integer")
    return value


def _array(archive: zipfile.ZipFile, node: Any, where: str) -> NDArray[Any]:
    if not isinstance(node, dict) or node.get("__loader__") != "NdArrayNode" or node.get("type") != "numpy":
        raise UnsupportedModel(f"{where} is not stored as a NumPy array")
    try:
        with archive.open(str(node["file"])) as handle:
            return np.load(io.BytesIO(handle.read()), allow_pickle=False)  # type: ignore[no-any-return]
    except (KeyError, ValueError, OSError) as exc:
        raise UnsupportedModel(f"{where} cannot be read as a plain array: {exc}") from None


def _check_schema_tree(archive: zipfile.ZipFile, node: dict[str, Any], where: str) -> None:
    """One ``Tree`` of the schema, checked from its reduce arguments and state before anything is built."""
    try:
        n_features_node, n_classes_node, n_outputs_node = node["__reduce__"]["args"]["content"]
        state = node["content"]["content"]
        nodes_node, values_node = state["nodes"], state["values"]
        node_count_node, max_depth_node = state["node_count"], state["max_depth"]
    except (KeyError, TypeError, ValueError):
        raise UnsupportedModel(f"{where} is not stored as scikit-learn stores a tree") from None
    n_classes = _array(archive, n_classes_node, f"{where} n_classes")
    check_tree_arrays(
        n_features=_json_int(n_features_node, f"{where} n_features"),
        n_classes=n_classes,
        n_outputs=_json_int(n_outputs_node, f"{where} n_outputs"),
        node_count=_json_int(node_count_node, f"{where} node_count"),
        max_depth=_json_int(max_depth_node, f"{where} max_depth"),
        nodes=_array(archive, nodes_node, f"{where} nodes"),
        values=_array(archive, values_node, f"{where} values"),
        where=where,
    )


def check_tree_arrays(
    *,
    n_features: int,
    n_classes: NDArray[Any],
    n_outputs: int,
    node_count: int,
    max_depth: int,
    nodes: NDArray[Any],
    values: NDArray[Any],
    where: str,
) -> None:
    """Refuse a tree whose arrays scikit-learn's or shap's C code could not walk within bounds."""
    if n_features < 1 or n_outputs < 1:
        raise UnsupportedModel(f"{where} has {n_features} features and {n_outputs} outputs")
    classes = np.asarray(n_classes)
    if classes.shape != (n_outputs,) or classes.dtype.kind not in "iu" or (classes < 1).any():
        raise UnsupportedModel(f"{where} has malformed class counts")
    if (
        nodes.ndim != 1
        or nodes.dtype.names is None
        or not {"left_child", "right_child", "feature"} <= set(nodes.dtype.names)
    ):
        raise UnsupportedModel(f"{where} has no node array of scikit-learn's layout")
    count = len(nodes)
    if count < 1 or node_count != count:
        raise UnsupportedModel(f"{where} says {node_count} nodes but stores {count}")
    if values.shape != (count, n_outputs, int(classes.max())):
        raise UnsupportedModel(f"{where} stores values of shape {values.shape} for {count} nodes")
    left = nodes["left_child"].astype(np.int64)
    right = nodes["right_child"].astype(np.int64)
    feature = nodes["feature"].astype(np.int64)
    index = np.arange(count)
    leaf = (left == -1) & (right == -1)
    internal = ~leaf
    if ((left == -1) != (right == -1)).any():
        raise UnsupportedModel(f"{where} has a node with one child")
    if (left[internal] <= index[internal]).any() or (right[internal] <= index[internal]).any():
        raise UnsupportedModel(f"{where} has a child that is not a later node (a cycle or a back reference)")
    if (left[internal] >= count).any() or (right[internal] >= count).any():
        raise UnsupportedModel(f"{where} has a child index beyond its {count} nodes")
    if ((feature[internal] < 0) | (feature[internal] >= n_features)).any():
        raise UnsupportedModel(f"{where} splits on a feature beyond its {n_features} features")
    parents = np.bincount(np.concatenate([left[internal], right[internal]]), minlength=count)
    if parents[0] != 0 or (parents[1:] != 1).any():
        raise UnsupportedModel(f"{where} is not a tree: a node has no parent or several")
    depth = np.zeros(count, dtype=np.int64)
    for i in np.flatnonzero(internal):  # children are later nodes: one pass in order sets every depth
        depth[left[i]] = depth[right[i]] = depth[i] + 1
    if int(depth.max()) != max_depth:
        raise UnsupportedModel(f"{where} says depth {max_depth} but is {int(depth.max())} deep")


def check_loaded_trees(model: Any) -> int:
    """Check every tree of a loaded estimator again, and that it splits within the width its estimators check.

    Returns how many trees were checked.
    """
    from sklearn.base import BaseEstimator
    from sklearn.tree._tree import Tree

    checked = 0
    stack: list[tuple[Any, tuple[int, ...], int]] = [(model, (), 0)]
    while stack:
        item, widths, depth = stack.pop()
        if depth > 64:
            raise UnsupportedModel("the model nests estimators more than 64 levels deep")
        if isinstance(item, Tree):
            for width in widths:
                if item.n_features != width:
                    raise UnsupportedModel(f"a tree takes {item.n_features} features where its estimator takes {width}")
            _check_loaded_tree(item, f"tree {checked}")
            checked += 1
        elif isinstance(item, BaseEstimator):
            if type(item).__name__ in _COMPOSITES:
                inner: tuple[int, ...] = ()  # a composite's parts read other widths than its input's
            else:
                declared = getattr(item, "n_features_in_", None)
                inner = widths if declared is None else (*widths, int(declared))
            stack.extend((value, inner, depth + 1) for value in vars(item).values())
        elif isinstance(item, (list, tuple)):
            stack.extend((value, widths, depth + 1) for value in item)
        elif isinstance(item, dict):
            stack.extend((value, widths, depth + 1) for value in item.values())
        elif isinstance(item, np.ndarray) and item.dtype == object:
            stack.extend((value, widths, depth + 1) for value in item.ravel())
    return checked


def _check_loaded_tree(tree: Any, where: str) -> None:
    state = tree.__getstate__()
    check_tree_arrays(
        n_features=int(tree.n_features),
        n_classes=np.asarray(tree.n_classes),
        n_outputs=int(tree.n_outputs),
        node_count=int(state["node_count"]),
        max_depth=int(state["max_depth"]),
        nodes=state["nodes"],
        values=state["values"],
        where=where,
    )
