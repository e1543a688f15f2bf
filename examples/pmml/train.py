"""Make the pmml example's model: an iris decision tree as a PMML 4.4 TreeModel.

scikit-learn trains the tree; this script writes it as PMML itself (no Java,
no sklearn2pmml), with each leaf's training counts as its score distribution.
Deterministic; the document is small and committed, so building the example
needs no training:

    python examples/pmml/train.py        # writes models/iris.pmml and heldout.json
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

HERE = Path(__file__).resolve().parent
FIELDS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABELS = ["setosa", "versicolor", "virginica"]


def node_xml(tree: DecisionTreeClassifier, counts: np.ndarray, node: int, predicate: str, depth: int) -> list[str]:
    t = tree.tree_
    pad = "  " * depth
    total = int(counts[node].sum())
    score = LABELS[int(np.argmax(counts[node]))]
    lines = [f'{pad}<Node score={quoteattr(score)} recordCount="{total}">', f"{pad}  {predicate}"]
    left, right = t.children_left[node], t.children_right[node]
    if left == -1:  # a leaf
        lines += [
            f'{pad}  <ScoreDistribution value={quoteattr(label)} recordCount="{int(n)}"/>'
            for label, n in zip(LABELS, counts[node], strict=True)
        ]
    else:
        field, threshold = FIELDS[t.feature[node]], repr(float(t.threshold[node]))
        below = f'<SimplePredicate field="{field}" operator="lessOrEqual" value="{threshold}"/>'
        above = f'<SimplePredicate field="{field}" operator="greaterThan" value="{threshold}"/>'
        lines += node_xml(tree, counts, left, below, depth + 1)
        lines += node_xml(tree, counts, right, above, depth + 1)
    lines.append(f"{pad}</Node>")
    return lines


def pmml(tree: DecisionTreeClassifier, x: np.ndarray, y: np.ndarray) -> str:
    # training counts per node: every sample counts in each node on its path
    counts = np.zeros((tree.tree_.node_count, len(LABELS)))
    paths = tree.decision_path(x)
    for row, label in enumerate(y):
        counts[paths.indices[paths.indptr[row] : paths.indptr[row + 1]], label] += 1
    fields = "\n".join(f'    <DataField name="{f}" optype="continuous" dataType="double"/>' for f in FIELDS)
    values = "".join(f'<Value value="{label}"/>' for label in LABELS)
    mining = "\n".join(f'      <MiningField name="{f}"/>' for f in FIELDS)
    nodes = "\n".join(node_xml(tree, counts, 0, "<True/>", 2))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header description="iris decision tree (kbuild example)"/>
  <DataDictionary numberOfFields="{len(FIELDS) + 1}">
{fields}
    <DataField name="species" optype="categorical" dataType="string">{values}</DataField>
  </DataDictionary>
  <TreeModel modelName="iris" functionName="classification" splitCharacteristic="binarySplit">
    <MiningSchema>
{mining}
      <MiningField name="species" usageType="target"/>
    </MiningSchema>
{nodes}
  </TreeModel>
</PMML>
"""


def main() -> None:
    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=1, stratify=data.target
    )
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x_train, y_train)
    (HERE / "models").mkdir(exist_ok=True)
    (HERE / "models" / "iris.pmml").write_text(pmml(tree, x_train, y_train), encoding="utf-8")
    accuracy = float((tree.predict(x_test) == y_test).mean())
    heldout = {
        "inputs": {name: x_test[:, i].tolist() for i, name in enumerate(FIELDS)},
        "labels": [LABELS[i] for i in y_test],
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/iris.pmml and heldout.json ({len(y_test)} rows, accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
