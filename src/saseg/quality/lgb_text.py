"""LightGBM's text model, read and checked by saseg before LightGBM sees it.

A quality model decides which frames are skipped, so its trees are data to check, not code
to trust. LightGBM's own parser aborts the whole process on some malformed files (a tree
with ``leaf_value`` missing ends in ``terminate called without an active exception``, exit
134, when its parallel loader throws) and accepts NaN leaves. `canonical_model_text` parses
the text, checks every field a prediction uses, and writes the model back from the parsed
numbers alone: header, trees (without the ``tree_sizes`` byte offsets, so LightGBM reads the
trees one after the other) and nothing else. LightGBM only ever sees that text.

What is checked: the header (one regression output, ``max_feature_idx`` and
``feature_names`` matching the expected feature count), and per tree: ``num_leaves >= 1``;
``num_leaves`` finite leaf values; for ``num_leaves - 1`` splits, a feature index in range,
a finite threshold, a numerical ``decision_type`` (categorical splits and linear trees are
never written by saseg), children that form one tree reached from the root; a finite
shrinkage.
"""

from __future__ import annotations

import math
import re

from ..errors import FormatError

__all__ = ["canonical_model_text"]

_HEADER_KEYS = ("version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx",
                "objective", "feature_names", "feature_infos")
_FEATURE_INFO = re.compile(r"none|\[[-+0-9.eEinfa]+:[-+0-9.eEinfa]+\]")


def canonical_model_text(text: str, n_features: int, where: str) -> str:
    """Check a LightGBM text model and return it rebuilt from its checked numbers.

    Parameters
    ----------
    text : the model file's content
    n_features : the number of features the quality model was fitted on
    where : the file, for the messages

    Raises
    ------
    FormatError
        One line naming `where` and the first field that is missing or wrong.
    """
    body, sep, _ = text.partition("\nend of trees")
    if not sep:
        raise FormatError(f"{where}: expected a LightGBM text model ending its trees with "
                          "'end of trees', but found none.")
    blocks = re.split(r"\n\s*\n", body.strip())
    header = _fields(blocks[0], where, "header", first="tree")
    for key in _HEADER_KEYS:
        if key not in header:
            raise FormatError(f"{where}: expected the header field {key!r}, but it is missing.")
    if (header["num_class"], header["num_tree_per_iteration"], header["objective"]) != ("1", "1", "regression"):
        raise FormatError(f"{where}: expected one regression output (num_class=1, objective=regression), "
                          f"but got num_class={header['num_class']}, objective={header['objective']}.")
    if _int(header["max_feature_idx"], where, "max_feature_idx") != n_features - 1:
        raise FormatError(f"{where}: expected max_feature_idx={n_features - 1} ({n_features} features), "
                          f"but got {header['max_feature_idx']}.")
    names, infos = header["feature_names"].split(), header["feature_infos"].split()
    if len(names) != n_features or len(infos) != n_features or not all(_FEATURE_INFO.fullmatch(i) for i in infos):
        raise FormatError(f"{where}: expected {n_features} feature names and feature infos, but got "
                          f"{len(names)} and {len(infos)}.")
    trees = [_tree(block, i, n_features, where) for i, block in enumerate(blocks[1:])]
    if not trees:
        raise FormatError(f"{where}: expected at least one tree, but found none.")
    lines = ["tree"] + [f"{key}={header[key]}" for key in _HEADER_KEYS if key != "version"]
    lines.insert(1, "version=v4")
    return "\n".join(lines) + "\n\n" + "\n".join(trees) + "\nend of trees\n"


def _fields(block: str, where: str, what: str, first: str | None = None) -> dict[str, str]:
    lines = block.strip().splitlines()
    if first is not None and (not lines or lines[0].strip() != first):
        raise FormatError(f"{where}: expected the {what} to start with {first!r}, but got "
                          f"{(lines[0] if lines else '')[:40]!r}.")
    out = {}
    for line in lines[1:] if first is not None else lines:
        key, eq, value = line.partition("=")
        if not eq:
            raise FormatError(f"{where}: expected key=value lines in the {what}, but got {line[:40]!r}.")
        if key in out:
            raise FormatError(f"{where}: the {what} has {key!r} twice.")
        out[key.strip()] = value.strip()
    return out


def _int(text: str, where: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FormatError(f"{where}: expected an integer {what}, but got {text[:40]!r}.") from None


def _numbers(fields: dict, key: str, count: int, where: str, tree: str, kind=float) -> list:
    if key not in fields:
        raise FormatError(f"{where}: {tree}: expected {key!r}, but it is missing.")
    parts = fields[key].split()
    try:
        values = [kind(v) for v in parts]
    except ValueError:
        raise FormatError(f"{where}: {tree}: expected numbers in {key!r}, but got {fields[key][:40]!r}.") from None
    if len(values) != count:
        raise FormatError(f"{where}: {tree}: expected {count} values in {key!r}, but got {len(values)}.")
    if kind is float and not all(math.isfinite(v) for v in values):
        raise FormatError(f"{where}: {tree}: expected finite {key}, but it holds NaN or Inf; the file is corrupt.")
    return values


def _tree(block: str, index: int, n_features: int, where: str) -> str:
    """One checked tree, written back in LightGBM's format."""
    lines = block.strip().splitlines()
    name = f"Tree={index}"
    if not lines or lines[0].strip() != name:
        raise FormatError(f"{where}: expected {name!r}, but got {(lines[0] if lines else '')[:40]!r}.")
    fields = _fields(block, where, name, first=name)
    n_leaves = _int(fields.get("num_leaves", ""), where, f"{name} num_leaves")
    if n_leaves < 1 or _int(fields.get("num_cat", ""), where, f"{name} num_cat") != 0:
        raise FormatError(f"{where}: {name}: expected num_leaves >= 1 and no categorical splits (num_cat=0), "
                          f"but got num_leaves={n_leaves}, num_cat={fields.get('num_cat')}.")
    if fields.get("is_linear", "0") != "0":
        raise FormatError(f"{where}: {name}: expected a constant-leaf tree (is_linear=0).")
    leaves = _numbers(fields, "leaf_value", n_leaves, where, name)
    shrinkage = _numbers(fields, "shrinkage", 1, where, name)
    out = {"num_leaves": str(n_leaves), "num_cat": "0"}
    n_splits = n_leaves - 1
    if n_splits:
        feature = _numbers(fields, "split_feature", n_splits, where, name, kind=int)
        threshold = _numbers(fields, "threshold", n_splits, where, name)
        decision = _numbers(fields, "decision_type", n_splits, where, name, kind=int)
        left = _numbers(fields, "left_child", n_splits, where, name, kind=int)
        right = _numbers(fields, "right_child", n_splits, where, name, kind=int)
        if not all(0 <= f < n_features for f in feature):
            raise FormatError(f"{where}: {name}: expected split features in [0, {n_features}), but got {feature}.")
        if not all(0 <= d < 16 and d & 1 == 0 and (d >> 2) & 3 <= 2 for d in decision):
            raise FormatError(f"{where}: {name}: expected numerical decision types, but got {decision}.")
        _check_shape(left, right, n_leaves, where, name)
        out.update(split_feature=_join(feature), threshold=_join(threshold), decision_type=_join(decision),
                   left_child=_join(left), right_child=_join(right))
    out.update(leaf_value=_join(leaves), is_linear="0", shrinkage=_join(shrinkage))
    return "\n".join([name] + [f"{k}={v}" for k, v in out.items()]) + "\n\n"


def _check_shape(left: list[int], right: list[int], n_leaves: int, where: str, name: str) -> None:
    """Children: node i >= 0, leaf j as ~j = -(j + 1); every node and leaf reached once from the root."""
    seen_nodes, seen_leaves, stack = {0}, set(), [0]
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child >= 0:
                if child >= len(left) or child in seen_nodes:
                    raise FormatError(f"{where}: {name}: expected the children to form one tree, but "
                                      f"node {child} is out of range or reached twice.")
                seen_nodes.add(child)
                stack.append(child)
            else:
                leaf = -child - 1
                if leaf >= n_leaves or leaf in seen_leaves:
                    raise FormatError(f"{where}: {name}: expected the children to form one tree, but "
                                      f"leaf {leaf} is out of range or reached twice.")
                seen_leaves.add(leaf)
    if len(seen_nodes) != len(left) or len(seen_leaves) != n_leaves:
        raise FormatError(f"{where}: {name}: expected every node and leaf reached from the root, but "
                          "some are not.")


def _join(values: list) -> str:
    return " ".join(repr(v) if isinstance(v, float) else str(v) for v in values)
